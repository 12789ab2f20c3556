//! Free TCP ports on 127.0.0.1 for the harness's servers, never handing out the same port twice in one process.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// Ports this process handed out already: the kernel may offer a just-closed port again, and two
/// control planes starting in parallel must not both get it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A currently unused TCP port on 127.0.0.1 that this process has not handed out before.
///
/// The port is free when returned but not reserved; another process could take it before our
/// server binds it, so starting code retries on "address already in use".
pub fn free_port() -> Result<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let set = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener.local_addr().context("reading a bound port")?.port();
        if set.insert(port) {
            return Ok(port);
        }
    }
    bail!("no unused port on 127.0.0.1 after 100 tries")
}

/// Whether process `pid` owns a listening TCP socket on `port` (IPv4 or IPv6), per `/proc`.
///
/// Guards against talking to a stranger: if another process took the port between
/// [`free_port`] and our server's bind, a health check would otherwise succeed against it.
pub fn pid_listens_on(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_found_under_its_own_pid_only() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(pid_listens_on(std::process::id(), port));
        assert!(!pid_listens_on(1, port));
        drop(listener);
        assert!(!pid_listens_on(std::process::id(), port));
    }

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.len(), 50);
    }
}
