//! Deployment over SSH against a real `sshd` on loopback: the test starts
//! Debian's OpenSSH server with a host key and a client key it generates, and
//! `quba eval --board qemu-aarch64 --ssh` copies the aarch64 device binary
//! and the model into a folder "on the board", runs it there under the
//! profile's QEMU launcher, and streams the records back through the SSH
//! session. The board's decisions must equal the native x86 run's
//! (`quba compare`: agreement 1.0, every verdict equal).
//!
//! Needs /usr/sbin/sshd, ssh, ssh-keygen and the cross-built device binary;
//! without them the test says so and passes, unless QUBA_REQUIRE_SSH=1 (set
//! by CI), where anything missing is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use crate::util::*;

fn skip(why: &str) -> bool {
    assert!(std::env::var("QUBA_REQUIRE_SSH").is_err(), "QUBA_REQUIRE_SSH is set but {why}");
    eprintln!("skipping: {why}");
    true
}

struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path).status().unwrap().success();
    assert!(ok, "ssh-keygen failed for {}", path.display());
}

fn start_sshd(dir: &Path) -> (Sshd, u16) {
    keygen(&dir.join("host_key"));
    keygen(&dir.join("client_key"));
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    // sshd wants its privilege-separation folder even when it is not used.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
         StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
        hk = dir.join("host_key").display(),
        ak = dir.join("authorized_keys").display(),
        pid = dir.join("sshd.pid").display(),
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("sshd.log")).unwrap()))
        .spawn()
        .unwrap();
    let sshd = Sshd(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "sshd did not listen: {}", std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
    (sshd, port)
}

#[test]
fn eval_over_ssh_on_an_emulated_board() {
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        if !Path::new(tool).exists() && skip(&format!("{tool} is missing (Debian: openssh-server, openssh-client)")) {
            return;
        }
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let arm = quba_host::board::cross_device_binary(&target_dir, "aarch64-unknown-linux-gnu");
    if !arm.exists() && skip(&format!("{} not built", arm.display())) {
        return;
    }
    let t = std::env::temp_dir().join(format!("quba-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&t);
    std::fs::create_dir_all(&t).unwrap();
    let (_sshd, port) = start_sshd(&t);
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string();
    let board_dir = t.join("board");
    let ssh_args = format!(
        "-p {port} -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        t.join("client_key").display()
    );
    let model = root().join("models/zoo/cnn-baseline.int8.onnx");
    let eval = |extra: &[&str], runs: &Path| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_quba"))
            .arg("eval")
            .arg("--model")
            .arg(&model)
            .args(["--probes", "clean,cue-conflict", "--per-class", "2", "--bootstrap", "0", "--json", "--runs-dir"])
            .arg(runs)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}\nsshd: {}", String::from_utf8_lossy(&out.stderr), std::fs::read_to_string(t.join("sshd.log")).unwrap_or_default());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let board = eval(
        &["--board", "qemu-aarch64", "--ssh", &format!("{user}@127.0.0.1"), "--ssh-args", &ssh_args, "--remote-dir", board_dir.to_str().unwrap()],
        &t.join("runs-board"),
    );
    // What the board received: the binary and the model with its pipeline sidecar, nothing else.
    let mut got: Vec<String> = std::fs::read_dir(&board_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    got.sort();
    assert_eq!(got, ["cnn-baseline.int8.json", "cnn-baseline.int8.onnx", "quba-device"]);
    assert_eq!(std::fs::read(board_dir.join("quba-device")).unwrap(), std::fs::read(&arm).unwrap());
    let b = &board["models"][0];
    assert_eq!(b["target"], "aarch64-unknown-linux-gnu");
    assert_eq!(b["run"]["status"], "complete", "{b}");

    let host = eval(&[], &t.join("runs-host"));
    let out = Command::new(env!("CARGO_BIN_EXE_quba"))
        .args(["compare", host["models"][0]["run"]["dir"].as_str().unwrap(), b["run"]["dir"].as_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["agreement"], 1.0, "{c}");
    assert_eq!(c["unpaired"], serde_json::json!([0, 0]), "{c}");
    for d in ["accuracy", "calibration_error", "class_balance", "shape_bias"] {
        assert_eq!(c["dimensions"][d]["verdict"], "equal", "{d}: {c}");
    }

    // A host that refuses the key: a clear error naming ssh, no run recorded as complete.
    let bad = Command::new(env!("CARGO_BIN_EXE_quba"))
        .arg("eval")
        .arg("--model")
        .arg(&model)
        .args(["--board", "qemu-aarch64", "--ssh", &format!("{user}@127.0.0.1"), "--ssh-args"])
        .arg(format!("-p {port} -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null", t.join("host_key").display()))
        .arg("--runs-dir")
        .arg(t.join("runs-bad"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("ssh") && err.contains("failed"), "{err}");
    let _ = std::fs::remove_dir_all(&t);
}
