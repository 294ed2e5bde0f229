//! systemd's readiness protocol (`Type=notify`): when started by systemd with `NOTIFY_SOCKET`
//! set, the shipper says `READY=1` once the ring is open and every sink has recovered, and
//! `STOPPING=1` when it begins to stop. Without `NOTIFY_SOCKET` this does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") to systemd, if it asked for it. Errors are ignored: the
/// service works the same without them (systemd then times the start out, which is logged).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (Linux).
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        log::debug!("sd_notify {state}: {e}");
    }
}
