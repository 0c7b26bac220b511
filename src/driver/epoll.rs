//! The epoll driver: tokio's standard reactor, one current-thread runtime per
//! core. The baseline every io_uring backend is compared against, and the
//! fallback where io_uring is unavailable.

use std::io::{self, IoSlice};

use smallvec::SmallVec;
use tokio::net::TcpStream;

use super::{Io, Out};

impl Io for TcpStream {
    type Buf = Vec<u8>;

    fn buffer(&self, initial: &[u8], capacity: usize) -> Vec<u8> {
        super::owned_buffer(initial, capacity)
    }

    async fn read(&self, mut buf: Vec<u8>, held: usize) -> (io::Result<usize>, Vec<u8>) {
        loop {
            match self.try_read(&mut buf[held..]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return (result, buf),
            }
            if let Err(e) = self.readable().await {
                return (Err(e), buf);
            }
        }
    }

    async fn write(&self, buf: Vec<u8>, out: &mut Vec<Out>) -> (io::Result<()>, Vec<u8>) {
        let mut slices: SmallVec<[IoSlice<'_>; 8]> = out
            .iter()
            .map(|piece| match piece {
                Out::Recv(range) => IoSlice::new(&buf[range.clone()]),
                Out::Owned(frame, start) => IoSlice::new(&frame[*start..]),
            })
            .filter(|slice| !slice.is_empty())
            .collect();
        let result = write_all_vectored(self, &mut slices).await;
        drop(slices);
        crate::session::out::recycle(out);
        (result, buf)
    }

    async fn send(&self, frame: Vec<u8>) -> io::Result<()> {
        write_all_vectored(self, &mut [IoSlice::new(&frame)]).await
    }

    fn shutdown(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Both);
    }

    fn half_close(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write);
    }
}

async fn write_all_vectored(stream: &TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match stream.try_write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
