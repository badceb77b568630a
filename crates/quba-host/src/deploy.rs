//! `quba eval --board NAME --ssh user@host`: the device binary and the models
//! go to the board over SSH, the suite runs there, and its stream comes back
//! on the SSH session's stdout into the same ingest as a local run.
//!
//! Only `ssh` is used, files included (`cat > path` on the far side), so any
//! host that accepts an SSH command works: no scp/sftp subsystem, no agent on
//! the board. The synthetic benchmark and the generated corruptions need no
//! data on the board; a dataset on disk would have to be copied there by the
//! user, which `--ssh` refuses rather than guesses.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

#[derive(Clone, Debug)]
pub struct Ssh {
    pub dest: String,
    /// Extra ssh arguments (port, identity, options), before the destination.
    pub args: Vec<String>,
    /// Folder on the board that receives the binary and the models.
    pub dir: String,
}

/// POSIX single quotes: the remote shell sees every argument as one word.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Ssh {
    /// The ssh invocation that runs `argv` on the board.
    pub fn command(&self, argv: &[String]) -> Command {
        let mut c = Command::new("ssh");
        c.args(&self.args).arg(&self.dest).arg("--").arg(argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
        c
    }

    fn run(&self, argv: &[&str], stdin: Option<&Path>) -> Result<()> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let mut c = self.command(&argv);
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().context("cannot start ssh (is the OpenSSH client installed?)")?;
        if let Some(p) = stdin {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            // A closed pipe here means ssh failed; its stderr below says why.
            let _ = child.stdin.take().unwrap().write_all(&bytes);
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("ssh {} `{}` failed ({}): {}", self.dest, argv.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    pub fn mkdir(&self) -> Result<()> {
        self.run(&["mkdir", "-p", &self.dir], None)
    }

    /// Copies a local file into the board's folder; the remote path.
    pub fn upload(&self, local: &Path, executable: bool) -> Result<String> {
        let name = local.file_name().with_context(|| format!("{} has no file name", local.display()))?.to_string_lossy();
        let remote = format!("{}/{}", self.dir.trim_end_matches('/'), name);
        let tmp = format!("{remote}.part");
        // Written to a temporary name and renamed, so an interrupted copy never looks complete.
        self.run(&["sh", "-c", &format!("cat > {} && mv {} {}", shell_quote(&tmp), shell_quote(&tmp), shell_quote(&remote))], Some(local))
            .with_context(|| format!("cannot copy {} to {}:{remote}", local.display(), self.dest))?;
        if executable {
            self.run(&["chmod", "+x", &remote], None)?;
        }
        Ok(remote)
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting_keeps_each_argument_one_word() {
        assert_eq!(shell_quote("/tmp/quba-edge/model.onnx"), "/tmp/quba-edge/model.onnx");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
    }
}
