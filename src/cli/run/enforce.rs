//! `credgate run --enforce`: CMD in a network namespace whose only way out
//! is the task's own port.
//!
//! credgate starts CMD through itself, `credgate __enforce … -- CMD…`, a
//! fresh single-threaded process that makes a new user namespace and a new
//! network namespace and then executes CMD in them. The user namespace is
//! what lets a user without root make the network namespace, and CMD gets
//! no capability from it: inside, CMD keeps credgate's user and group ids
//! (65534 where credgate runs as root), and a process whose id is not 0 in
//! its namespace loses every capability when it executes a program. The
//! new network namespace has a loopback interface and nothing else: no
//! route, no DNS, none of the machine's own loopback services (credgate's
//! admin API among them).
//!
//! Before it executes CMD, the helper brings that loopback up, listens on
//! it at the address of the task's port, and hands the listener to
//! credgate over a Unix socket in the task's private directory. credgate
//! relays every connection accepted there to the task's real port. A
//! client that honours the proxy variables goes through credgate as
//! before; one that ignores them (Node 20's global `fetch`, aiohttp by
//! default, a raw socket) finds nothing to connect to and fails, never
//! reaching the origin.
//!
//! credgate makes itself non-dumpable first: CMD runs as the same user, and
//! could otherwise trace credgate, read its memory or take its sockets.
//!
//! Nothing falls back. If a step fails, CMD is not started, and the
//! message says which step.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use nix::libc;
use nix::sys::socket::{self, MsgFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// `credgate __enforce`: the helper `run --enforce` starts CMD through.
#[derive(Debug, clap::Args)]
pub struct EnforceArgs {
    /// The address of the task's port, to listen on inside.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The Unix socket to hand the listener to credgate over.
    #[arg(long)]
    pub hand_over: PathBuf,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The name the helper is started under.
pub const SUBCOMMAND: &str = "__enforce";

/// The program the helper is: credgate's own executable, whatever its
/// path, as the kernel knows it.
pub const SELF: &str = "/proc/self/exe";

/// The exit code when CMD was not started.
const EXIT_NOT_STARTED: u8 = 127;

/// The byte sent with the listener.
const READY: u8 = 1;

/// The id credgate's root is mapped to inside: nobody, so that CMD has no
/// capability in its namespace.
const NOBODY: u32 = 65534;

/// How long the helper may take to hand its listener over.
const HAND_OVER_LIMIT: Duration = Duration::from_secs(10);

/// Makes this process non-dumpable: processes of the same user can then no
/// longer trace it, read its memory or take its file descriptors.
pub fn protect_self() -> io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(io::Error::from)
}

/// The helper: sets up CMD's namespaces and executes CMD; returns only
/// when it could not, with the exit code. Must run before any thread is
/// started (a threaded process cannot make a user namespace).
pub fn exec(args: &EnforceArgs) -> u8 {
    let Some((program, program_args)) = args.command.split_first() else {
        return EXIT_NOT_STARTED;
    };
    if let Err(e) = enter(args.listen, &args.hand_over) {
        eprintln!(
            "credgate: --enforce: {e:#}; {} was not started",
            program.to_string_lossy()
        );
        return EXIT_NOT_STARTED;
    }
    let e = std::process::Command::new(program)
        .args(program_args)
        .exec();
    eprintln!("credgate: cannot start {}: {e}", program.to_string_lossy());
    EXIT_NOT_STARTED
}

/// Makes and enters CMD's namespaces and hands the listener over.
fn enter(listen: SocketAddr, hand_over: &Path) -> anyhow::Result<()> {
    use nix::sched::CloneFlags;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).context(
        "cannot create a user and a network namespace for CMD (user namespaces may be \
         turned off: user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns, \
         or a seccomp profile)",
    )?;
    std::fs::write("/proc/self/setgroups", "deny")
        .context("cannot deny setgroups in CMD's user namespace")?;
    std::fs::write("/proc/self/uid_map", id_map(uid)).context("cannot map CMD's user id")?;
    std::fs::write("/proc/self/gid_map", id_map(gid)).context("cannot map CMD's group id")?;
    loopback_up().context("cannot bring up the loopback interface of CMD's network namespace")?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} in CMD's network namespace"))?;
    let channel = std::os::unix::net::UnixStream::connect(hand_over)
        .with_context(|| format!("cannot reach credgate at {}", hand_over.display()))?;
    let fds = [listener.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        &channel,
        &[IoSlice::new(&[READY])],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .context("cannot hand the listener to credgate")?;
    // Both are credgate's now; CMD holds neither (they are close-on-exec).
    Ok(())
}

/// `INSIDE OUTSIDE 1`: `id` keeps its value inside, but for root, which
/// becomes nobody.
fn id_map(id: u32) -> String {
    let inside = if id == 0 { NOBODY } else { id };
    format!("{inside} {id} 1\n")
}

/// Sets the loopback interface up, with one RTM_NEWLINK over rtnetlink.
fn loopback_up() -> io::Result<()> {
    use socket::{AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
    let index = nix::net::if_::if_nametoindex("lo")?;
    let sock = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    socket::sendto(
        sock.as_raw_fd(),
        &set_link_up(index),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut reply = [0u8; 1024];
    let n = socket::recv(sock.as_raw_fd(), &mut reply, MsgFlags::empty())?;
    acknowledged(&reply[..n])
}

/// An rtnetlink request that sets interface `index` up, asking for an
/// acknowledgement: a netlink header, then an `ifinfomsg`.
fn set_link_up(index: u32) -> Vec<u8> {
    const LEN: u32 = 16 + 16;
    let up = libc::IFF_UP as u32;
    let mut msg = Vec::with_capacity(LEN as usize);
    msg.extend(LEN.to_ne_bytes());
    msg.extend(libc::RTM_NEWLINK.to_ne_bytes());
    msg.extend(((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend(1u32.to_ne_bytes()); // sequence number
    msg.extend(0u32.to_ne_bytes()); // port id: the kernel's
    msg.push(libc::AF_UNSPEC as u8);
    msg.push(0);
    msg.extend(0u16.to_ne_bytes()); // device type
    msg.extend(index.to_ne_bytes());
    msg.extend(up.to_ne_bytes()); // flags
    msg.extend(up.to_ne_bytes()); // the flags to change
    msg
}

/// Whether the kernel's answer to [`set_link_up`] is a success.
fn acknowledged(reply: &[u8]) -> io::Result<()> {
    let field = |at: usize, len: usize| reply.get(at..at + len);
    let kind = field(4, 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let error = field(16, 4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, error) {
        (Some(kind), Some(0)) if kind == libc::NLMSG_ERROR as u16 => Ok(()),
        (Some(kind), Some(e)) if kind == libc::NLMSG_ERROR as u16 && e < 0 => {
            Err(io::Error::from_raw_os_error(-e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the kernel's answer is not an acknowledgement",
        )),
    }
}

/// The helper's command line for `program` and its arguments.
pub fn helper_args(
    listen: SocketAddr,
    hand_over: &Path,
    program: &std::ffi::OsStr,
    program_args: &[OsString],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        SUBCOMMAND.into(),
        "--listen".into(),
        listen.to_string().into(),
        "--hand-over".into(),
        hand_over.into(),
        "--".into(),
        program.into(),
    ];
    args.extend(program_args.iter().cloned());
    args
}

/// Waits for the helper's listener on `hand_over`, for at most
/// [`HAND_OVER_LIMIT`].
pub async fn receive(hand_over: &tokio::net::UnixListener) -> anyhow::Result<OwnedFd> {
    tokio::time::timeout(HAND_OVER_LIMIT, async {
        let (stream, _) = hand_over.accept().await?;
        loop {
            stream.readable().await?;
            match stream.try_io(tokio::io::Interest::READABLE, || receive_fd(&stream)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    })
    .await
    .context("CMD's namespace did not hand its listener over in time")?
    .context("receiving the listener of CMD's namespace")
}

/// One message of [`READY`] with one descriptor, from `stream`.
fn receive_fd(stream: &tokio::net::UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    match (msg.bytes, fds.len()) {
        (1, 1) if byte[0] == READY => Ok(fds.remove(0)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the helper sent no listener",
        )),
    }
}

/// Starts relaying every connection accepted on `inside` (the listener in
/// CMD's namespace) to `task_port`, until the handle is aborted.
pub fn start_relay(
    inside: OwnedFd,
    task_port: SocketAddr,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let inside = std::net::TcpListener::from(inside);
    inside.set_nonblocking(true)?;
    let inside = tokio::net::TcpListener::from_std(inside)?;
    Ok(tokio::spawn(async move {
        loop {
            let (mut agent, _) = match inside.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors, or a connection reset before accept:
                // the next one may do.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(task_port).await else {
                    return;
                };
                // Streams (SSE, a token at a time) must not wait for Nagle.
                let _ = agent.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut agent, &mut upstream).await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_value_but_root_becomes_nobody() {
        assert_eq!(id_map(1000), "1000 1000 1\n");
        assert_eq!(id_map(0), "65534 0 1\n");
    }

    #[test]
    fn the_link_request_is_a_netlink_header_and_an_ifinfomsg() {
        let msg = set_link_up(1);
        assert_eq!(msg.len(), 32);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(msg[4..6].try_into().unwrap()), 16);
        assert_eq!(u16::from_ne_bytes(msg[6..8].try_into().unwrap()), 5);
        assert_eq!(i32::from_ne_bytes(msg[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(msg[24..28].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(msg[28..32].try_into().unwrap()), 1);
    }

    #[test]
    fn only_a_zero_error_is_an_acknowledgement() {
        let reply = |kind: u16, error: i32| {
            let mut r = vec![0u8; 36];
            r[4..6].copy_from_slice(&kind.to_ne_bytes());
            r[16..20].copy_from_slice(&error.to_ne_bytes());
            r
        };
        assert!(acknowledged(&reply(2, 0)).is_ok());
        let denied = acknowledged(&reply(2, -libc::EPERM)).unwrap_err();
        assert_eq!(denied.raw_os_error(), Some(libc::EPERM));
        assert!(acknowledged(&reply(3, 0)).is_err());
        assert!(acknowledged(&[0u8; 8]).is_err());
    }

    #[test]
    fn the_helper_gets_cmd_after_a_double_dash() {
        let args = helper_args(
            "127.0.0.1:4000".parse().unwrap(),
            Path::new("/tmp/x/enforce.sock"),
            "sh".as_ref(),
            &["-c".into(), "--listen".into()],
        );
        let text: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            text,
            [
                SUBCOMMAND,
                "--listen",
                "127.0.0.1:4000",
                "--hand-over",
                "/tmp/x/enforce.sock",
                "--",
                "sh",
                "-c",
                "--listen"
            ]
        );
    }
}
