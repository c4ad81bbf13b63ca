//! The setup message: the server's one message on the setup socket, carrying the ring and slab
//! sizes and, as `SCM_RIGHTS`, the connection's memfd, the client's end of the second bell
//! socket and, if the slab size is not 0, the server's slab (see [`super::lend`]).
//!
//! ```text
//! 0   magic   b"rpc-shm\0"
//! 8   version u32 LE (2)
//! 12  ring size u32 LE (bytes, a power of two)
//! 16  slab size u64 LE (bytes, a multiple of 4096; 0: no slab)
//! ```
//!
//! Version 2 added the slab and, in the memfd, each ring's queue of slab references; a version
//! 1 peer is refused with both versions named.
//!
//! The server sends it as soon as it accepts (it never waits for the client, so a silent client
//! cannot hold up its accept loop); the client checks every field and every descriptor before
//! using any of them.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::FileType;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

const MAGIC: &[u8; 8] = b"rpc-shm\0";
const VERSION: u32 = 2;
const LEN: usize = 24;

/// What the client receives.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) ring_len: usize,
    pub(crate) memfd: OwnedFd,
    pub(crate) bell: OwnedFd,
    /// The server's slab and its size.
    pub(crate) slab: Option<(OwnedFd, usize)>,
}

pub(crate) fn encode(ring_len: usize, slab_len: usize) -> [u8; LEN] {
    let mut msg = [0u8; LEN];
    msg[..8].copy_from_slice(MAGIC);
    msg[8..12].copy_from_slice(&VERSION.to_le_bytes());
    msg[12..16].copy_from_slice(&u32::try_from(ring_len).expect("ring sizes fit in u32").to_le_bytes());
    msg[16..24].copy_from_slice(&(slab_len as u64).to_le_bytes());
    msg
}

/// The ring and slab sizes a setup message announces, or why it is not one of ours.
pub(crate) fn decode(msg: &[u8]) -> io::Result<(usize, usize)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad shared-memory setup: {what}"));
    if msg.len() != LEN || &msg[..8] != MAGIC {
        return Err(bad("the server is not an shm:// server"));
    }
    let version = u32::from_le_bytes(msg[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(&format!("the server speaks setup version {version}, this client {VERSION}")));
    }
    let ring_len = u32::from_le_bytes(msg[12..16].try_into().expect("4 bytes")) as usize;
    let slab_len = u64::from_le_bytes(msg[16..24].try_into().expect("8 bytes"));
    match usize::try_from(slab_len) {
        Ok(slab_len) if super::region::valid_slab_len(slab_len) => Ok((ring_len, slab_len)),
        _ => Err(bad(&format!("the server offers a slab of {slab_len} bytes"))),
    }
}

/// Sends the setup message without waiting (a fresh socket's buffer always has room; a client
/// that is gone already makes this fail, and the listener moves on).
pub(crate) fn send(
    stream: &UnixStream,
    ring_len: usize,
    memfd: &OwnedFd,
    bell: &OwnedFd,
    slab: Option<(&OwnedFd, usize)>,
) -> io::Result<()> {
    let msg = encode(ring_len, slab.map_or(0, |(_, len)| len));
    let mut fds = vec![memfd.as_fd(), bell.as_fd()];
    fds.extend(slab.map(|(fd, _)| fd.as_fd()));
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptors in the control buffer"));
    }
    let sent =
        rustix::net::sendmsg(stream, &[IoSlice::new(&msg)], &mut control, SendFlags::DONTWAIT | SendFlags::NOSIGNAL)?;
    if sent != LEN {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "the setup message did not fit the socket"));
    }
    Ok(())
}

/// Waits for the server's setup message and checks it.
pub(crate) async fn receive(stream: &UnixStream) -> io::Result<Offer> {
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || receive_now(stream)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn receive_now(stream: &UnixStream) -> io::Result<Offer> {
    let mut msg = [0u8; LEN + 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut msg)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    // Every descriptor that arrived is owned here, so any we do not keep is closed.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "the server closed the setup socket without offering shared memory (its access mode may not admit \
             this user, or it could not create the memory)",
        ));
    }
    let announced = decode(&msg[..received.bytes]);
    let expected = match announced {
        Ok((_, 0)) => 2,
        _ => 3,
    };
    if received.flags.contains(ReturnFlags::CTRUNC) && fds.len() < expected {
        // The kernel drops descriptors it cannot install: this process is at its limit.
        return Err(io::Error::new(
            io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error()).kind(),
            "too many open files: the shared memory's descriptors could not be received",
        ));
    }
    let (ring_len, slab_len) = announced?;
    if received.flags.contains(ReturnFlags::CTRUNC) || fds.len() != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad shared-memory setup: expected exactly {expected} file descriptors, not {}", fds.len()),
        ));
    }
    let slab = (slab_len > 0).then(|| (fds.pop().expect("three"), slab_len));
    let bell = fds.pop().expect("two");
    let memfd = fds.pop().expect("two");
    if FileType::from_raw_mode(rustix::fs::fstat(&bell)?.st_mode) != FileType::Socket {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad shared-memory setup: the bell is not a socket"));
    }
    Ok(Offer { ring_len, memfd, bell, slab })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_messages_round_trip_and_refuse_strangers() {
        assert_eq!(decode(&encode(1 << 20, 0)).unwrap(), (1 << 20, 0));
        assert_eq!(decode(&encode(4096, 16 << 20)).unwrap(), (4096, 16 << 20));
        assert!(decode(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap_err().to_string().contains("not an shm:// server"));
        assert!(decode(&encode(4096, 0)[..LEN - 1]).is_err());
        let mut future = encode(4096, 0);
        future[8] = 3;
        assert!(decode(&future).unwrap_err().to_string().contains("setup version 3"));
        let mut old = encode(4096, 0);
        old[8] = 1;
        assert!(decode(&old).unwrap_err().to_string().contains("version 1, this client 2"));
        let mut odd = encode(4096, 0);
        odd[16..24].copy_from_slice(&12_345u64.to_le_bytes());
        assert!(decode(&odd).unwrap_err().to_string().contains("slab of 12345 bytes"));
        odd[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&odd).is_err());
    }
}
