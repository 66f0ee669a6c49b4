//! The fork server: a single-threaded child forked once per pool that forks every worker
//! of it, its control protocol, and the parent's client of it (`ForkServer`, the
//! `Transport` the proxies use). Everything that forks or reaps lives here.
//!
//! Descriptor rules. Every descriptor the transport makes is an `io::Fd`, recorded in
//! `OUR_FDS`; the server closes all of them at its start, except its end of the control
//! socket. A worker's socket end reaches the server with `SCM_RIGHTS`; the server forks
//! the worker holding it and closes its own copy right after, and a worker closes the
//! control socket and the parent's pidfd first thing, so no worker holds another
//! worker's socket (which would keep a dead channel open and hang shutdown).
//!
//! Orphans: each worker sets `PR_SET_PDEATHSIG(SIGKILL)` towards the single-threaded
//! server, and the server exits (killing and reaping its workers) when the parent closes
//! the control socket, which the kernel does when the parent dies; the server also
//! watches the parent through a pidfd.

use super::{
    io::{Fd, OUR_FDS, grow_buffers, recv_with_fds, sendmsg_fd, socket_pair},
    link::Link,
    proxy::Transport,
    wire::malformed,
    worker,
};
use crate::rt::{
    pool::InitFn,
    sync::{Mutex, lock},
};
use rustix::{
    event::{PollFd, PollFlags},
    fd::{AsFd, BorrowedFd, OwnedFd},
    io::Errno,
    net::SocketType,
    process::{Pid, PidfdFlags, Signal, WaitOptions},
};
use std::{
    ffi::{CStr, c_int},
    io,
    sync::atomic::Ordering::Relaxed,
};

/// Socket buffer size requested for worker channels.
const SOCKET_BUFFER: usize = 4 << 20;

const OP_SPAWN: u32 = 1;
const OP_REAP: u32 = 2;
const OP_OK: u32 = 3;
const OP_ERR: u32 = 4;
/// Send the signal `value` to every worker not yet reaped (`signal_all`).
const OP_SIGNAL: u32 = 5;

/// A control message (fixed size; one `SOCK_SEQPACKET` datagram of `Ctl::SIZE` bytes:
/// op, flag (u32 each), value (i64), name (16 bytes, NUL-padded)).
#[derive(Clone, Copy)]
struct Ctl {
    op: u32,
    flag: u32,
    value: i64,
    name: [u8; 16],
}

impl Ctl {
    const SIZE: usize = 32;

    fn new(op: u32, value: i64) -> Ctl {
        Ctl {
            op,
            flag: 0,
            value,
            name: [0; 16],
        }
    }

    fn to_bytes(self) -> [u8; Ctl::SIZE] {
        let mut b = [0u8; Ctl::SIZE];
        b[..4].copy_from_slice(&self.op.to_ne_bytes());
        b[4..8].copy_from_slice(&self.flag.to_ne_bytes());
        b[8..16].copy_from_slice(&self.value.to_ne_bytes());
        b[16..].copy_from_slice(&self.name);
        b
    }

    fn from_bytes(b: &[u8; Ctl::SIZE]) -> Ctl {
        Ctl {
            op: u32::from_ne_bytes(b[..4].try_into().unwrap()),
            flag: u32::from_ne_bytes(b[4..8].try_into().unwrap()),
            value: i64::from_ne_bytes(b[8..16].try_into().unwrap()),
            name: b[16..].try_into().unwrap(),
        }
    }
}

/// Sends a control message, with a descriptor attached when `fd` is given.
fn send_ctl(sock: BorrowedFd<'_>, msg: Ctl, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    // A SEQPACKET socket sends the whole message or nothing.
    sendmsg_fd(sock, &msg.to_bytes(), fd).map(|_| ())
}

/// Receives a control message and any descriptor; `None` on EOF.
fn recv_ctl(sock: BorrowedFd<'_>) -> io::Result<Option<(Ctl, Option<OwnedFd>)>> {
    let mut buf = [0u8; Ctl::SIZE];
    // One descriptor per message; any extra one is dropped (closed), not leaked.
    let mut fd: Option<OwnedFd> = None;
    let n = recv_with_fds(sock, &mut buf, |f| drop(fd.replace(f)))?;
    if n == 0 {
        return Ok(None);
    }
    if n != Ctl::SIZE {
        return Err(malformed());
    }
    Ok(Some((Ctl::from_bytes(&buf), fd)))
}

/// Waits for a child to end; its wait status (0 if it cannot be had).
fn wait_status(pid: Pid) -> c_int {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return status.as_raw(),
            Err(Errno::INTR) => continue,
            _ => return 0,
        }
    }
}

/// A process id, if `raw` is one (positive and in range).
fn pid_of(raw: i64) -> Option<Pid> {
    i32::try_from(raw)
        .ok()
        .filter(|&p| p > 0)
        .and_then(Pid::from_raw)
}

/// Leaves this child process without running the parent program's exit handlers.
fn exit_now(code: c_int) -> ! {
    // SAFETY: `_exit` ends the process at once; nothing of ours runs after it.
    unsafe { libc::_exit(code) }
}

/// The fork server's loop. Never returns.
fn server_main(ctl: OwnedFd, parent: Option<OwnedFd>, init: Option<(InitFn, usize)>) -> ! {
    super::io::mark_server_side();
    let mut children: Vec<Pid> = Vec::new();
    let finish = |children: &[Pid]| -> ! {
        for &pid in children {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            wait_status(pid);
        }
        exit_now(0)
    };
    loop {
        let mut pfd = vec![PollFd::new(&ctl, PollFlags::IN)];
        if let Some(p) = &parent {
            pfd.push(PollFd::new(p, PollFlags::IN));
        }
        match rustix::event::poll(&mut pfd, None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(_) => finish(&children),
        }
        if pfd.get(1).is_some_and(|p| !p.revents().is_empty()) {
            finish(&children); // the parent process is gone
        }
        drop(pfd);
        let (msg, fd) = match recv_ctl(ctl.as_fd()) {
            Ok(Some(x)) => x,
            _ => finish(&children),
        };
        let reply = match (msg.op, fd) {
            (OP_SPAWN, Some(fd)) => {
                let server = rustix::process::getpid();
                // SAFETY: this process is single-threaded, so the child may run anything.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // The worker keeps only its own channel.
                    drop(ctl);
                    drop(parent);
                    worker_process(fd, server, init, &msg.name);
                }
                let e = io::Error::last_os_error();
                drop(fd); // the worker's end belongs to the worker now
                match pid_of(pid.into()) {
                    Some(child) => {
                        children.push(child);
                        Ctl::new(OP_OK, pid.into())
                    }
                    None => Ctl::new(OP_ERR, e.raw_os_error().unwrap_or(libc::EIO).into()),
                }
            }
            (OP_REAP, None) => {
                let pid = pid_of(msg.value);
                match children.iter().position(|&c| Some(c) == pid) {
                    Some(i) => {
                        let pid = children.swap_remove(i);
                        if msg.flag != 0 {
                            let _ = rustix::process::kill_process(pid, Signal::KILL);
                        }
                        Ctl::new(OP_OK, wait_status(pid) as i64)
                    }
                    None => Ctl::new(OP_ERR, libc::ECHILD as i64),
                }
            }
            (OP_SIGNAL, None) => match i32::try_from(msg.value).ok().filter(|&s| s > 0) {
                Some(sig) => {
                    for &pid in &children {
                        // SAFETY: a signal to our own child, not yet reaped.
                        unsafe { libc::kill(pid.as_raw_nonzero().get(), sig) };
                    }
                    Ctl::new(OP_OK, children.len() as i64)
                }
                None => Ctl::new(OP_ERR, libc::EINVAL as i64),
            },
            // An unexpected descriptor is dropped (closed): not ours to keep.
            _ => Ctl::new(OP_ERR, libc::EINVAL as i64),
        };
        if send_ctl(ctl.as_fd(), reply, None).is_err() {
            finish(&children);
        }
    }
}

/// A worker process just forked by the server: ties its life to the server's, takes its
/// name, and runs `worker::run` on its channel. Never returns.
fn worker_process(link: OwnedFd, server: Pid, init: Option<(InitFn, usize)>, name: &[u8; 16]) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    if rustix::process::getppid() != Some(server) {
        exit_now(1); // the server died before we could ask to die with it
    }
    if let Ok(name) = CStr::from_bytes_until_nul(name) {
        let _ = rustix::thread::set_name(name);
    }
    worker::run(link.as_fd(), init);
    exit_now(0)
}

/// The parent's client of a pool's fork server.
pub(super) struct ForkServer {
    /// The control socket; `None` once closed. Requests and replies are serialised here.
    ctl: Mutex<Option<Fd>>,
    pid: Pid,
    /// Set (under `ctl`'s lock) by `signal_all`: no worker is started after it.
    stopped: std::sync::atomic::AtomicBool,
}

impl ForkServer {
    /// Forks the fork server. The program state workers start from is this moment's.
    ///
    /// The one fork from the (possibly multi-threaded) parent is made safe for what a
    /// worker uses: glibc's `fork` takes and resets malloc's locks, and we hold
    /// `stdout`'s and `stderr`'s locks across it (so no other thread is inside stdio
    /// then).
    pub(super) fn start(init: Option<(InitFn, usize)>) -> io::Result<ForkServer> {
        let (parent_end, server_end) = socket_pair(SocketType::SEQPACKET)?;
        // None on an old kernel (or under valgrind 3.19), which we tolerate: the control
        // socket's EOF still tells the server that the parent died.
        let parent_pidfd =
            rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty()).ok();
        let (pid, error) = {
            let fds = lock(&OUR_FDS);
            let snapshot = fds.clone();
            // SAFETY: we hold stdout's and stderr's locks across the fork, so that no
            // other thread is inside stdio when the child's copy is made (glibc resets
            // malloc's locks itself). The child only unlocks them and runs `server_main`.
            let (pid, error) = unsafe {
                flockfile(stdout_ptr());
                flockfile(stderr_ptr());
                let pid = super::io::own_fork(|| libc::fork());
                let error = io::Error::last_os_error();
                funlockfile(stderr_ptr());
                funlockfile(stdout_ptr());
                (pid, error)
            };
            if pid == 0 {
                for fd in snapshot {
                    if fd != server_end.raw() {
                        // SAFETY: in the child: its copy of a descriptor of ours, which
                        // nothing in this process uses again (the `Fd`s naming them
                        // belong to the parent's threads, never run here).
                        unsafe { rustix::io::close(fd) };
                    }
                }
                crate::rt::pool::forget_worker_identity();
                server_main(server_end.into_child(), parent_pidfd, init);
            }
            (pid, error)
        };
        drop(parent_pidfd); // the parent does not need its own pidfd
        let Some(pid) = pid_of(pid.into()) else {
            return Err(error);
        };
        drop(server_end);
        Ok(ForkServer {
            ctl: Mutex::new(Some(parent_end)),
            pid,
            stopped: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// One request to the server and its reply.
    fn request(&self, msg: Ctl, fd: Option<BorrowedFd<'_>>) -> io::Result<i64> {
        let ctl = lock(&self.ctl);
        let stopped = msg.op == OP_SPAWN && self.stopped.load(Relaxed);
        let Some(sock) = ctl.as_ref().filter(|_| !stopped) else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the process pool is closed",
            ));
        };
        send_ctl(sock.as_fd(), msg, fd)?;
        match recv_ctl(sock.as_fd())? {
            Some((r, None)) if r.op == OP_OK => Ok(r.value),
            Some((r, None)) if r.op == OP_ERR => {
                Err(io::Error::from_raw_os_error(r.value as c_int))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the fork server died",
            )),
        }
    }

    /// Asks the server to reap a worker (after killing it, for `kill`); its wait status.
    fn reap(&self, pid: i32, kill: bool) -> Option<c_int> {
        let mut msg = Ctl::new(OP_REAP, pid as i64);
        msg.flag = u32::from(kill);
        self.request(msg, None).ok().map(|s| s as c_int)
    }

    /// Sends `signal` to every worker the server has started and not reaped, and starts
    /// no worker after (a start waiting for the lock is refused). A worker being started
    /// now (its request holds the lock) gets the signal too.
    pub(super) fn signal_all(&self, signal: i32) {
        {
            let _ctl = lock(&self.ctl);
            self.stopped.store(true, Relaxed);
        }
        let _ = self.request(Ctl::new(OP_SIGNAL, signal.into()), None);
    }

    /// Closes the control socket and reaps the server (which reaps any worker left).
    pub(super) fn close(&self) {
        let ctl = lock(&self.ctl).take();
        if ctl.is_some() {
            drop(ctl);
            wait_status(self.pid);
        }
    }
}

impl Transport for ForkServer {
    fn start(&self, name: &str) -> io::Result<Link> {
        let (mine, theirs) = socket_pair(SocketType::STREAM)?;
        grow_buffers(mine.as_fd(), SOCKET_BUFFER);
        grow_buffers(theirs.as_fd(), SOCKET_BUFFER);
        let mut msg = Ctl::new(OP_SPAWN, 0);
        msg.name = name16(name);
        let pid = self.request(msg, Some(theirs.as_fd()))?;
        drop(theirs);
        Ok(Link::new(mine, pid as i32))
    }

    fn end(&self, id: i32, kill: bool) -> Option<String> {
        self.reap(id, kill).map(describe_status)
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// A name as the kernel keeps it: at most 15 bytes, NUL-padded.
pub(super) fn name16(name: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let b = name.as_bytes();
    let k = b.len().min(15);
    n[..k].copy_from_slice(&b[..k]);
    n
}

/// Describes a wait status: "was killed by signal 9 (SIGKILL)", "exited with exit status 3".
pub(crate) fn describe_status(status: c_int) -> String {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        format!("was killed by signal {sig} ({})", signal_name(sig))
    } else if libc::WIFEXITED(status) {
        format!("exited with exit status {}", libc::WEXITSTATUS(status))
    } else {
        format!("ended with wait status {status}")
    }
}

fn signal_name(sig: c_int) -> &'static str {
    const NAMES: &[(c_int, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == sig)
        .map_or("unknown signal", |(_, s)| s)
}

// glibc's stdio locks and streams: what rustix does not cover.
unsafe extern "C" {
    fn flockfile(f: *mut libc::FILE);
    fn funlockfile(f: *mut libc::FILE);
}

fn stdout_ptr() -> *mut libc::FILE {
    unsafe extern "C" {
        static mut stdout: *mut libc::FILE;
    }
    // SAFETY: reading glibc's `stdout` pointer.
    unsafe { stdout }
}

fn stderr_ptr() -> *mut libc::FILE {
    unsafe extern "C" {
        static mut stderr: *mut libc::FILE;
    }
    // SAFETY: reading glibc's `stderr` pointer.
    unsafe { stderr }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_described() {
        assert_eq!(describe_status(9), "was killed by signal 9 (SIGKILL)");
        assert_eq!(describe_status(3 << 8), "exited with exit status 3");
    }

    #[test]
    fn control_messages_round_trip() {
        let mut m = Ctl::new(OP_REAP, -7);
        m.flag = 1;
        m.name = name16("a_name_longer_than_fifteen");
        let back = Ctl::from_bytes(&m.to_bytes());
        assert_eq!((back.op, back.flag, back.value), (OP_REAP, 1, -7));
        assert_eq!(&back.name[..], b"a_name_longer_t\0");
    }
}
