//! calico-node's BIRD supervisor (confd's job in Calico 0.22): writes the rendered
//! `bird.conf` into the run directory (plus `log stderr all;`, so BIRD's messages land
//! in `bird.log` beside it), starts `bird -f` in the agent's namespace as a
//! child process, and on a changed configuration asks it to reload (`birdc configure`),
//! restarting it if that fails. A BIRD still answering on the control socket when ours
//! starts (left by an agent that was killed) is shut down first (`birdc down`).
//! Stopping kills the child by its own PID and waits for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// A running (or not yet started) BIRD for this host.
pub struct Bird {
    dir: PathBuf,
    config: Option<String>,
    child: Option<Child>,
}

impl Bird {
    /// A supervisor keeping its files (`bird.conf`, `bird.ctl`, `bird.log`) in `dir`.
    pub fn new(dir: &Path) -> Bird {
        Bird {
            dir: dir.to_path_buf(),
            config: None,
            child: None,
        }
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }

    fn ctl_path(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// Makes BIRD run with `config`: starts it, reloads it when the text changed, and
    /// restarts it if it died.
    pub fn ensure(&mut self, config: &str) -> anyhow::Result<()> {
        let alive = match &mut self.child {
            Some(child) => child.try_wait().context("checking on bird")?.is_none(),
            None => false,
        };
        if alive && self.config.as_deref() == Some(config) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        // BIRD logs to syslog unless told otherwise: keep its messages in bird.log.
        std::fs::write(self.conf_path(), format!("log stderr all;\n{config}"))
            .with_context(|| format!("writing {}", self.conf_path().display()))?;
        if alive {
            let out = Command::new("birdc")
                .arg("-s")
                .arg(self.ctl_path())
                .arg("configure")
                .output()
                .context("running birdc configure")?;
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && text.contains("Reconfigur") {
                tracing::info!("bird reconfigured");
                self.config = Some(config.to_string());
                return Ok(());
            }
            tracing::warn!(output = %text.trim(), "birdc configure failed; restarting bird");
            self.stop();
        } else if self.child.is_some() {
            tracing::warn!("bird exited; restarting it");
            self.stop();
        }
        self.start()?;
        self.config = Some(config.to_string());
        Ok(())
    }

    /// Whether a BIRD answers on our control socket.
    fn answers(&self) -> bool {
        Command::new("birdc")
            .arg("-s")
            .arg(self.ctl_path())
            .args(["show", "status"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("BIRD")
            })
    }

    /// A BIRD left running by a previous agent that was killed (it is not our child):
    /// shut it down through its control socket so ours can take the socket over.
    fn stop_leftover(&self) {
        if !self.ctl_path().exists() || !self.answers() {
            return;
        }
        tracing::warn!(ctl = %self.ctl_path().display(), "stopping a BIRD left running by a previous calico-node");
        let _ = Command::new("birdc")
            .arg("-s")
            .arg(self.ctl_path())
            .arg("down")
            .stdin(Stdio::null())
            .output();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.answers() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        self.stop_leftover();
        let log = std::fs::File::create(self.dir.join("bird.log"))
            .with_context(|| format!("creating {}/bird.log", self.dir.display()))?;
        let child = Command::new("bird")
            .arg("-f")
            .arg("-c")
            .arg(self.conf_path())
            .arg("-s")
            .arg(self.ctl_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting bird (is BIRD 2 installed?)")?;
        tracing::info!(pid = child.id(), conf = %self.conf_path().display(), "bird started");
        self.child = Some(child);
        // A configuration bird rejects makes it exit at once: report that here.
        std::thread::sleep(Duration::from_millis(100));
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait().context("checking on bird")? {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default();
                bail!("bird exited at once ({status}): {}", log.trim());
            }
        }
        Ok(())
    }

    /// Kills BIRD (if running) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!("bird stopped");
        }
        self.config = None;
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.stop();
    }
}
