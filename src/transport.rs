//! Where the device writes its frames: stdout, a file, or TCP to `quba
//! listen`. Receiving them into a run directory is the host's side
//! (`quba_host::ingest`).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::TcpStream;

use anyhow::{Context, Result};

use crate::protocol::{FrameEncoder, Message};

/// Opens the device's output: `-` (stdout), `tcp://HOST:PORT`, or a file path
/// (appended to, so a board can keep its own copy of a run).
pub fn open_sink(spec: &str, token: Option<&str>) -> Result<Box<dyn Write>> {
    let w = open_raw_sink(spec, token)?;
    Ok(Box::new(Named { spec: spec.to_string(), inner: w }))
}

/// A sink whose write errors say which output failed: "No space left on
/// device" alone does not tell a user it was the board's SD card.
struct Named {
    spec: String,
    inner: Box<dyn Write>,
}

impl Named {
    fn name(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), format!("writing the stream to --out {}: {e}", self.spec))
    }
}

impl Write for Named {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.name(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.name(e))
    }
}

fn open_raw_sink(spec: &str, token: Option<&str>) -> Result<Box<dyn Write>> {
    if spec == "-" {
        return Ok(Box::new(BufWriter::new(std::io::stdout().lock())));
    }
    if let Some(addr) = spec.strip_prefix("tcp://") {
        let stream = TcpStream::connect(addr)
            .with_context(|| format!("cannot connect to the host at {addr}: is `quba listen` running there?"))?;
        stream.set_nodelay(true).ok();
        let mut w = BufWriter::new(stream);
        let token = token.context("--out tcp://… needs --token (printed by `quba listen`)")?;
        w.write_all(FrameEncoder::new().encode(&Message::Hello { token: token.into() })?)?;
        return Ok(Box::new(w));
    }
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec)
        .with_context(|| format!("cannot open output file {spec}"))?;
    Ok(Box::new(BufWriter::new(f)))
}
