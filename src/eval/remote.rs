//! A board reached over SSH: the device binary and the models are copied
//! there once, before any run starts, and each run's stream comes back
//! through its SSH session.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use quba_host::deploy::Ssh;

use crate::suite::SuiteArgs;

/// Where the device runs when it is not this machine: the SSH session and the
/// board-side paths of what was copied there.
pub struct Remote {
    pub ssh: Ssh,
    pub bin: String,
    models: HashMap<PathBuf, String>,
}

impl Remote {
    /// The board-side path of a model that was copied there.
    pub fn model(&self, local: &Path) -> Result<&str> {
        self.models.get(local).map(String::as_str).with_context(|| format!("{} was not copied to the board", local.display()))
    }
}

/// Refuses what SSH deployment cannot carry: datasets on disk and pipeline files.
pub fn check_deployable(s: &SuiteArgs) -> Result<()> {
    if !s.is_synth() || s.mvh.is_some() || s.imagenet_r.is_some() || s.bg_challenge.is_some() || s.imagenet_c.is_some() || s.frost_dir.is_some() {
        bail!(
            "--ssh copies the device binary and the models only; the synthetic benchmark and generated corruptions need \
             nothing on the board, but datasets on disk (--data, --mvh, --imagenet-r, --bg-challenge, --imagenet-c, \
             --frost-dir) would have to be copied there first: run quba-device on the board with `--out tcp://` instead"
        );
    }
    if s.pipeline.as_deref().is_some_and(|p| p != "imagenet") {
        bail!("--ssh copies each model's sidecar <model>.json; a --pipeline file is not copied");
    }
    Ok(())
}

/// Copies `device_bin` and `models` (with their sidecars) to the board.
pub fn deploy(ssh: Ssh, device_bin: &Path, models: &[PathBuf]) -> Result<Remote> {
    ssh.mkdir()?;
    let bin = ssh.upload(device_bin, true)?;
    let mut remote_models = HashMap::new();
    for m in models {
        // The device reads the pipeline from the sidecar beside the model.
        let sidecar = m.with_extension("json");
        if sidecar.exists() {
            ssh.upload(&sidecar, false)?;
        }
        remote_models.insert(m.clone(), ssh.upload(m, false)?);
    }
    eprintln!("copied {} and {} model(s) to {}:{}", device_bin.display(), models.len(), ssh.dest, ssh.dir);
    Ok(Remote { ssh, bin, models: remote_models })
}
