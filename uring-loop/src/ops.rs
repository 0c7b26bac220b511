//! Naming operations and counting them: the ownership rule of the loop.
//!
//! A completion names its operation by user_data: the owner's key (a slab
//! index) and what the operation was. A descriptor may be closed, and its
//! key reused, only once [`InFlight`] says that no operation naming it is
//! still in the kernel: otherwise a late completion would reach the next
//! owner of the key, or a queued operation would act on a reused descriptor
//! number.

/// user_data: `key << 8 | op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserData {
    pub key: u32,
    pub op: u8,
}

impl UserData {
    pub fn new(key: usize, op: u8) -> UserData {
        UserData {
            key: u32::try_from(key).expect("keys fit in 32 bits"),
            op,
        }
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.key) << 8) | u64::from(self.op)
    }

    pub fn decode(user_data: u64) -> UserData {
        UserData {
            key: (user_data >> 8) as u32,
            op: user_data as u8,
        }
    }
}

/// Operations of one owner that the kernel still has: counted up when one
/// is queued (successfully), down at its last completion (the one without
/// the MORE flag).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InFlight(u8);

impl InFlight {
    pub fn started(&mut self) {
        self.0 = self
            .0
            .checked_add(1)
            .expect("at most 255 operations per owner");
    }

    /// The last completion of one operation arrived.
    pub fn finished(&mut self) {
        self.0 = self
            .0
            .checked_sub(1)
            .expect("a completion for an operation in flight");
    }

    /// Nothing names the owner any more: its descriptor may be closed.
    pub fn none(&self) -> bool {
        self.0 == 0
    }

    pub fn count(&self) -> u8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let ud = UserData::new(123_456, 3);
        assert_eq!(UserData::decode(ud.encode()), ud);
        assert_eq!(UserData::decode(u64::MAX).op, 255);
    }

    #[test]
    #[should_panic(expected = "a completion for an operation in flight")]
    fn a_completion_for_nothing_in_flight_is_a_bug() {
        InFlight::default().finished();
    }
}
