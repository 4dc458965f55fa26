//! `pulmo serve`'s options for DICOM networking: where the Storage SCP listens, its AE
//! title, who may call it, and its limits; checked once into the transport's `Settings`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};
use clap::Args;

use crate::transport::dimse::{self, Settings, Watermarks};
use pulmo_dimse::{Config, Peers, Policy};

/// The DIMSE listener (C-STORE and C-ECHO).
#[derive(Debug, Args)]
pub struct DimseArgs {
    /// Address of the Storage SCP, e.g. 0.0.0.0:11112 (port 0 picks a free port; the bound
    /// address is printed). Off unless given.
    #[arg(long, env = "PULMO_DIMSE_LISTEN")]
    pub dimse_listen: Option<SocketAddr>,
    /// pulmo's AE title: the called AE title associations must name.
    #[arg(long, env = "PULMO_AE_TITLE", default_value = "PULMO")]
    pub ae_title: String,
    /// Peers that may associate (TOML: `[[peer]]` with ae_title, optional host and lane).
    /// Required unless --dimse-listen is a loopback address, where any calling AE is taken.
    #[arg(long, env = "PULMO_DIMSE_PEERS")]
    pub dimse_peers: Option<PathBuf>,
    /// Associations at once; one more is rejected (transient, local limit exceeded).
    #[arg(long, default_value_t = 16)]
    pub dimse_max_associations: usize,
    /// Largest P-DATA PDU pulmo receives, in bytes (its Maximum Length).
    #[arg(long, default_value_t = 262_144)]
    pub dimse_max_pdu: u32,
    /// Seconds a new connection has to send its association request (ARTIM).
    #[arg(long, default_value_t = 30)]
    pub dimse_artim_secs: u64,
    /// Seconds an association may stay silent between two PDUs before it is aborted.
    #[arg(long, default_value_t = 120)]
    pub dimse_idle_secs: u64,
}

impl DimseArgs {
    /// The checked settings, or `None` without --dimse-listen.
    pub fn settings(&self, watermarks: Watermarks) -> anyhow::Result<Option<Settings>> {
        let Some(listen) = self.dimse_listen else {
            return Ok(None);
        };
        ensure!(
            pulmo_dimse::is_ae_title(&self.ae_title),
            "--ae-title {:?} is not an AE title (1 to 16 printable ASCII characters, no backslash)",
            self.ae_title
        );
        ensure!(
            (4096..=16 << 20).contains(&self.dimse_max_pdu),
            "--dimse-max-pdu must be between 4096 and 16777216 bytes"
        );
        let peers = match &self.dimse_peers {
            Some(path) => {
                let peers = Peers::load(path)?;
                dimse::check_lanes(peers.iter())?;
                Some(peers)
            }
            None if listen.ip().is_loopback() => {
                tracing::warn!(
                    "no --dimse-peers: any calling AE title is accepted (loopback only)"
                );
                None
            }
            None => bail!(
                "listening for DIMSE on {listen} needs --dimse-peers: without it any calling AE \
                 title would be accepted, which pulmo allows on loopback only"
            ),
        };
        let config = Config {
            max_associations: self.dimse_max_associations.max(1),
            max_pdu: self.dimse_max_pdu,
            artim: Duration::from_secs(self.dimse_artim_secs.max(1)),
            idle: Duration::from_secs(self.dimse_idle_secs.max(1)),
            ..Config::new(Policy {
                ae_title: self.ae_title.trim().to_owned(),
                peers,
            })
        };
        Ok(Some(Settings { config, watermarks }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        dimse: DimseArgs,
    }

    fn settings(args: &[&str]) -> anyhow::Result<Option<Settings>> {
        let watermarks = Watermarks {
            min_free_bytes: 0,
            max_queued_jobs: 1,
        };
        Cli::try_parse_from([&["pulmo"], args].concat())?
            .dimse
            .settings(watermarks)
    }

    #[test]
    fn without_peers_only_loopback_may_listen() {
        assert!(settings(&[]).unwrap().is_none());
        let open = settings(&["--dimse-listen", "127.0.0.1:0"])
            .unwrap()
            .unwrap();
        assert_eq!(open.config.policy.ae_title, "PULMO");
        assert!(open.config.policy.peers.is_none());
        let err = settings(&["--dimse-listen", "0.0.0.0:11112"]).unwrap_err();
        assert!(err.to_string().contains("needs --dimse-peers"), "{err}");
    }

    #[test]
    fn ae_titles_and_peer_lanes_are_checked() {
        let long = [
            "--dimse-listen",
            "127.0.0.1:0",
            "--ae-title",
            "A_TITLE_TOO_LONG_",
        ];
        assert!(settings(&long).is_err());
        let dir = tempfile::tempdir().unwrap();
        let peers = dir.path().join("peers.toml");
        std::fs::write(&peers, "[[peer]]\nae_title = \"CT1\"\nlane = \"urgent\"\n").unwrap();
        let path = peers.to_str().unwrap();
        let err = settings(&["--dimse-listen", "0.0.0.0:0", "--dimse-peers", path]).unwrap_err();
        assert!(err.to_string().contains("unknown priority lane"), "{err}");
    }
}
