//! `quba listen`: boards stream to the host over TCP. One stream into one run
//! directory, or many boards at once, each into its own directory, with a
//! bounded number of streams received at a time.
//!
//! A board proves it was sent by whoever started the listener with the token
//! it was given (the first frame, `Hello`); the token is printed, never
//! guessed, and the default address is loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::ingest::{ingest, run_dir_for, summary, Manifest, ManifestFile};

#[derive(Args, Clone, Debug)]
pub struct ListenArgs {
    /// Address to listen on; loopback unless you say otherwise.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// Receive one stream into this run directory, then exit.
    #[arg(long, conflicts_with_all = ["runs_dir", "streams"], required_unless_present = "runs_dir")]
    pub run_dir: Option<PathBuf>,
    /// Receive many boards' streams at once, each into its own run directory here.
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// With --runs-dir: exit after this many streams ended (default: serve until killed).
    #[arg(long, requires = "runs_dir")]
    pub streams: Option<usize>,
    /// Streams received at once; further boards wait in the accept queue (TCP back-pressure).
    #[arg(long, default_value_t = 16)]
    pub max_connections: usize,
    /// A stream silent this long is taken as cut (Wi-Fi gone, board off) and its run kept
    /// as interrupted.
    #[arg(long, default_value_t = 600)]
    pub idle_timeout_s: u64,
    /// Token the device must present (default: a fresh random one, printed).
    #[arg(long)]
    pub token: Option<String>,
}

/// A fresh random token for `quba listen` (128 bits from the OS).
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("cannot read /dev/urandom for a token")?;
    Ok(quba_common::hex(&b))
}

/// Binds, prints the address and token on `announce`, and receives streams
/// as `a` says. Fails when any stream failed or was refused, after the others
/// were received.
pub fn run(a: &ListenArgs, announce: &mut dyn Write) -> Result<()> {
    let token = match a.token.clone() {
        Some(t) => t,
        None => new_token()?,
    };
    let listener = TcpListener::bind(&a.bind).with_context(|| format!("cannot listen on {}", a.bind))?;
    let addr = listener.local_addr()?;
    writeln!(announce, "listening on {addr} token {token}")
        .and_then(|_| announce.flush())
        .context("cannot print the listening address and token")?;
    // Whoever started us may stop reading after the address; that must not
    // stop the boards' streams.
    let _ = writeln!(announce, "on the board: quba-device run --model … --data … --out tcp://{addr} --token {token}").and_then(|_| announce.flush());
    let timeout = Some(Duration::from_secs(a.idle_timeout_s.max(1)));
    match (&a.runs_dir, &a.run_dir) {
        (Some(root), _) => serve(&listener, root, &token, timeout, a.streams.unwrap_or(usize::MAX), a.max_connections),
        (None, Some(dir)) => {
            let (stream, peer) = listener.accept()?;
            stream.set_read_timeout(timeout)?;
            let m = ingest(stream, dir, &format!("tcp {peer}"), Some(&token))?;
            summary(dir, &m);
            Ok(())
        }
        (None, None) => bail!("quba listen needs --run-dir (one stream) or --runs-dir (many)"),
    }
}

/// Receives `streams` streams, each into a new run directory under `root`,
/// `max_connections` at a time.
fn serve(listener: &TcpListener, root: &Path, token: &str, timeout: Option<Duration>, streams: usize, max_connections: usize) -> Result<()> {
    // Each stream on its own thread: memory per connection is one read
    // buffer, one frame and the run's keys; a full slot table stops accepting,
    // and the kernel's accept queue and TCP windows hold the boards back.
    let (slots, freed) = std::sync::mpsc::sync_channel::<()>(max_connections.max(1));
    let freed = std::sync::Mutex::new(freed);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..streams {
            slots.send(()).expect("the receiver lives in this scope");
            let (stream, peer) = listener.accept()?;
            let (refused, freed) = (&refused, &freed);
            scope.spawn(move || {
                let dir = run_dir_for(root, &format!("tcp-{}", peer.to_string().replace([':', '.', '[', ']'], "_")));
                let r = stream
                    .set_read_timeout(timeout)
                    .map_err(anyhow::Error::from)
                    .and_then(|_| ingest(stream, &dir, &format!("tcp {peer}"), Some(token)));
                match r {
                    Ok(m) => summary(&dir, &m),
                    Err(e) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        // A stream refused before its header left nothing worth a run
                        // directory; one whose header was lost keeps the records it sent.
                        if Manifest::read(&dir).is_ok_and(|m| m.header.is_none() && m.records + m.failures == 0) {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                        eprintln!("quba: stream from {peer}: {e:#}");
                    }
                }
                let _ = freed.lock().map(|rx| rx.recv());
            });
        }
        Ok(())
    })?;
    let n = refused.into_inner();
    if n > 0 {
        bail!("{n} of {streams} streams failed or were refused (see above); the others are in {}", root.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Failure, FrameEncoder, Message, ProbeSet};
    use std::net::TcpStream;
    use std::sync::mpsc;

    /// Collects what `run` announces, line by line, for the test to read
    /// while the listener runs.
    struct Lines(mpsc::Sender<String>, Vec<u8>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.extend_from_slice(buf);
            while let Some(i) = self.1.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.1.drain(..=i).collect();
                let _ = self.0.send(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quba-listen-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A board that presents `token`, then one sample's failure and hangs up.
    fn board(addr: &str, token: &str) {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut enc = FrameEncoder::new();
        s.write_all(enc.encode(&Message::Hello { token: token.into() }).unwrap()).unwrap();
        let failure = Failure { set: ProbeSet::Clean, sample: 7, path: "x.png".try_into().unwrap(), message: "unreadable".try_into().unwrap() };
        s.write_all(enc.encode(&Message::Failure(failure)).unwrap()).unwrap();
    }

    fn listen_in_background(args: ListenArgs) -> (String, String, std::thread::JoinHandle<Result<()>>) {
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || run(&args, &mut Lines(tx, Vec::new())));
        let first = rx.recv_timeout(Duration::from_secs(10)).expect("the listener announces itself");
        // "listening on ADDR token TOKEN": scripts read it word by word.
        let w: Vec<&str> = first.split(' ').collect();
        assert_eq!((w.len(), w[0], w[1], w[3]), (5, "listening", "on", "token"), "{first}");
        let (addr, token) = (w[2].to_string(), w[4].to_string());
        assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
        let hint = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(hint.contains(&format!("--out tcp://{addr} --token {token}")), "{hint}");
        (addr, token, h)
    }

    fn args(runs_dir: &Path, streams: usize) -> ListenArgs {
        ListenArgs {
            bind: "127.0.0.1:0".into(),
            run_dir: None,
            runs_dir: Some(runs_dir.to_path_buf()),
            streams: Some(streams),
            max_connections: 1,
            idle_timeout_s: 10,
            token: None,
        }
    }

    #[test]
    fn tokens_are_fresh_128_bit_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn streams_with_a_wrong_token_are_refused_and_leave_no_run() {
        let root = scratch("wrong-token");
        let (addr, token, h) = listen_in_background(args(&root, 2));
        // One board with a stale token, one with none at all; each is refused
        // without stopping the listener, and neither leaves a run directory.
        board(&addr, &format!("{token}x"));
        board(&addr, "");
        let e = h.join().unwrap().unwrap_err().to_string();
        assert!(e.starts_with("2 of 2 streams failed or were refused"), "{e}");
        let left: Vec<_> = std::fs::read_dir(&root).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "refused streams left {left:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_stream_without_a_header_is_an_error_naming_its_peer() {
        let dir = scratch("no-header");
        let a = ListenArgs { run_dir: Some(dir.clone()), runs_dir: None, streams: None, ..args(&dir, 1) };
        let (addr, token, h) = listen_in_background(a);
        board(&addr, &token);
        let e = h.join().unwrap().unwrap_err().to_string();
        assert!(e.starts_with("tcp 127.0.0.1:") && e.contains("no valid run header arrived"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
