//! The MessagePack encoding of the hub protocol (the `hub-msgpack` crate,
//! shared with loadgen), and what only the engine needs: a broadcast's
//! value converted between the encodings.

pub use hub_msgpack::*;

/// A JSON value as MessagePack, for a broadcast from a JSON connection to
/// MessagePack ones. None if `json` is not JSON.
pub fn from_json(json: &str) -> Option<Vec<u8>> {
    // Straight into MessagePack's own value, whose maps keep their order.
    let value: rmpv::Value = serde_json::from_str(json).ok()?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).ok()?;
    Some(out)
}

/// A MessagePack value as JSON, for a broadcast the other way. Binary
/// becomes an array of byte values; None for what JSON cannot hold (a map
/// with keys that are not strings, say).
pub fn to_json(msgpack: &[u8]) -> Option<String> {
    let value = rmpv::decode::read_value(&mut &msgpack[..]).ok()?;
    serde_json::to_string(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_cross_between_encodings() {
        let packed = from_json(r#"{"news":"for everyone","n":[1,2.5,null,true]}"#).unwrap();
        assert_eq!(
            to_json(&packed).unwrap(),
            r#"{"news":"for everyone","n":[1,2.5,null,true]}"#
        );
        assert!(from_json("{not json").is_none());
    }
}
