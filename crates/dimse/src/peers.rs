//! Who may associate: the peers file (TOML, `[[peer]]` with `ae_title`, optional `host`
//! and `lane`) and the policy that turns an A-ASSOCIATE-RQ's AE titles and the peer's
//! address into acceptance or a rejection with the standard's reason (PS3.8 9.3.4).
//!
//! Without a peers file any calling AE title is accepted, but only from a loopback
//! address; the caller refuses to listen on any other address without one.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What can be wrong with a peers file.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("could not read the peers file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the peers file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("peer {index} of {path}: {ae_title:?} is not an AE title (1 to 16 printable ASCII characters, no backslash)")]
    AeTitle {
        path: PathBuf,
        index: usize,
        ae_title: String,
    },
    #[error("peer {ae_title:?} of {path}: host {host:?} does not resolve to an address")]
    Host {
        path: PathBuf,
        ae_title: String,
        host: String,
    },
    #[error("the peers file {path} lists no [[peer]]")]
    Empty { path: PathBuf },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    peer: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    ae_title: String,
    host: Option<String>,
    lane: Option<String>,
}

/// One peer that may associate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its calling AE title, without padding.
    pub ae_title: String,
    /// The addresses it must connect from (its `host` resolved once at load); any when `None`.
    pub addresses: Option<Vec<IpAddr>>,
    /// The lane of the studies it sends, as written in the file (the caller checks it).
    pub lane: Option<String>,
}

impl Peer {
    fn matches(&self, calling: &str, address: IpAddr) -> bool {
        self.ae_title == calling
            && self
                .addresses
                .as_ref()
                .is_none_or(|list| list.iter().any(|a| same_ip(*a, address)))
    }
}

/// The peers that may associate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(Vec<Peer>);

impl Peers {
    /// Reads and checks a peers file; host names are resolved now, once.
    pub fn load(path: &Path) -> Result<Peers, PeersError> {
        let text = std::fs::read_to_string(path).map_err(|source| PeersError::Read {
            path: path.to_owned(),
            source,
        })?;
        Peers::parse(&text, path)
    }

    /// Checks a peers file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Peers, PeersError> {
        let file: File = toml::from_str(text).map_err(|source| PeersError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if file.peer.is_empty() {
            return Err(PeersError::Empty {
                path: path.to_owned(),
            });
        }
        let peers = file
            .peer
            .into_iter()
            .enumerate()
            .map(|(index, entry)| peer(entry, index + 1, path))
            .collect::<Result<_, _>>()?;
        Ok(Peers(peers))
    }

    /// Every peer, in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.0.iter()
    }
}

fn peer(entry: Entry, index: usize, path: &Path) -> Result<Peer, PeersError> {
    if !crate::is_ae_title(&entry.ae_title) {
        return Err(PeersError::AeTitle {
            path: path.to_owned(),
            index,
            ae_title: entry.ae_title,
        });
    }
    let ae_title = entry.ae_title.trim().to_owned();
    let addresses = match entry.host {
        None => None,
        Some(host) => Some(resolve(&host).ok_or_else(|| PeersError::Host {
            path: path.to_owned(),
            ae_title: ae_title.clone(),
            host,
        })?),
    };
    Ok(Peer {
        ae_title,
        addresses,
        lane: entry.lane,
    })
}

/// An IP address as written, or a host name's addresses.
fn resolve(host: &str) -> Option<Vec<IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(vec![ip]);
    }
    let found: Vec<IpAddr> = (host, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    (!found.is_empty()).then_some(found)
}

/// Equal addresses, an IPv4 address and its IPv4-mapped IPv6 form included.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Why an association request is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Permanent, by the service user: an unknown calling AE title, or a known one from
    /// another address.
    CallingAeTitle,
    /// Permanent, by the service user: the called AE title is not pulmo's.
    CalledAeTitle,
    /// Permanent, by the service user: not the DICOM application context.
    ApplicationContext,
    /// Permanent, by the service provider (ACSE): not protocol version 1.
    ProtocolVersion,
    /// Transient, by the service provider (presentation): too many associations at once.
    LocalLimitExceeded,
}

impl Rejection {
    /// The reason as the standard words it, for logs and the audit record.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::CallingAeTitle => "calling AE title not recognized",
            Rejection::CalledAeTitle => "called AE title not recognized",
            Rejection::ApplicationContext => "application context name not supported",
            Rejection::ProtocolVersion => "protocol version not supported",
            Rejection::LocalLimitExceeded => "local limit exceeded",
        }
    }

    /// The A-ASSOCIATE-RJ that says it.
    pub fn pdu(self) -> dicom_ul::pdu::AssociationRJ {
        use dicom_ul::pdu::{
            AssociationRJ, AssociationRJResult as Result, AssociationRJServiceProviderASCEReason,
            AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason as User,
            AssociationRJSource as Source,
        };
        let (result, source) = match self {
            Rejection::CallingAeTitle => (
                Result::Permanent,
                Source::ServiceUser(User::CallingAETitleNotRecognized),
            ),
            Rejection::CalledAeTitle => (
                Result::Permanent,
                Source::ServiceUser(User::CalledAETitleNotRecognized),
            ),
            Rejection::ApplicationContext => (
                Result::Permanent,
                Source::ServiceUser(User::ApplicationContextNameNotSupported),
            ),
            Rejection::ProtocolVersion => (
                Result::Permanent,
                Source::ServiceProviderASCE(
                    AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
                ),
            ),
            Rejection::LocalLimitExceeded => (
                Result::Transient,
                Source::ServiceProviderPresentation(
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                ),
            ),
        };
        AssociationRJ { result, source }
    }
}

/// pulmo's AE title and the peers that may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The called AE title pulmo answers to.
    pub ae_title: String,
    /// `None`: any calling AE title, from a loopback address only.
    pub peers: Option<Peers>,
}

impl Policy {
    /// The peer that may associate as `calling` from `address` calling `called`, or why not.
    /// Without a peers file the peer is made up from the calling AE title, with no lane.
    pub fn admit(&self, calling: &str, called: &str, address: IpAddr) -> Result<Peer, Rejection> {
        let (calling, called) = (calling.trim(), called.trim());
        if called != self.ae_title.trim() {
            return Err(Rejection::CalledAeTitle);
        }
        match &self.peers {
            Some(peers) => peers
                .iter()
                .find(|p| p.matches(calling, address))
                .cloned()
                .ok_or(Rejection::CallingAeTitle),
            None if address.to_canonical().is_loopback() => Ok(Peer {
                ae_title: calling.to_owned(),
                addresses: None,
                lane: None,
            }),
            None => Err(Rejection::CallingAeTitle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[peer]]
ae_title = "ORTHANC"
host = "127.0.0.1"
lane = "stat"

[[peer]]
ae_title = "SCANNER1"
"#;

    fn policy() -> Policy {
        Policy {
            ae_title: "PULMO".into(),
            peers: Some(Peers::parse(FILE, Path::new("peers.toml")).unwrap()),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn known_peers_are_admitted_from_their_host_with_their_lane() {
        let policy = policy();
        let orthanc = policy.admit("ORTHANC ", "PULMO", ip("127.0.0.1")).unwrap();
        assert_eq!(orthanc.lane.as_deref(), Some("stat"));
        assert!(policy
            .admit("ORTHANC", "PULMO", ip("::ffff:127.0.0.1"))
            .is_ok());
        assert_eq!(
            policy.admit("ORTHANC", "PULMO", ip("10.0.0.9")),
            Err(Rejection::CallingAeTitle)
        );
        assert!(policy.admit("SCANNER1", "PULMO", ip("10.0.0.9")).is_ok());
        assert_eq!(
            policy.admit("STRANGER", "PULMO", ip("127.0.0.1")),
            Err(Rejection::CallingAeTitle)
        );
        assert_eq!(
            policy.admit("ORTHANC", "OTHER", ip("127.0.0.1")),
            Err(Rejection::CalledAeTitle)
        );
    }

    #[test]
    fn without_peers_any_calling_ae_is_admitted_on_loopback_only() {
        let open = Policy {
            ae_title: "PULMO".into(),
            peers: None,
        };
        assert!(open.admit("ANY", "PULMO", ip("127.0.0.1")).is_ok());
        assert!(open.admit("ANY", "PULMO", ip("::1")).is_ok());
        assert_eq!(
            open.admit("ANY", "PULMO", ip("192.168.1.2")),
            Err(Rejection::CallingAeTitle)
        );
    }

    #[test]
    fn bad_peers_files_name_what_is_wrong() {
        let path = Path::new("p.toml");
        let long = "[[peer]]\nae_title = \"SEVENTEEN_CHARS_X\"\n";
        let err = Peers::parse(long, path).unwrap_err().to_string();
        assert!(err.contains("peer 1 of p.toml"), "{err}");
        let unknown = "[[peer]]\nae_title = \"A\"\nport = 4\n";
        assert!(matches!(
            Peers::parse(unknown, path),
            Err(PeersError::Parse { .. })
        ));
        assert!(matches!(
            Peers::parse("", path),
            Err(PeersError::Empty { .. })
        ));
        let host = "[[peer]]\nae_title = \"A\"\nhost = \"no such host.invalid\"\n";
        assert!(matches!(
            Peers::parse(host, path),
            Err(PeersError::Host { .. })
        ));
    }

    #[test]
    fn rejections_carry_the_standard_reasons() {
        use dicom_ul::pdu::AssociationRJResult;
        let busy = Rejection::LocalLimitExceeded.pdu();
        assert_eq!(busy.result, AssociationRJResult::Transient);
        assert_eq!(busy.source.to_string(), "local limit exceeded");
        let calling = Rejection::CallingAeTitle.pdu();
        assert_eq!(calling.result, AssociationRJResult::Permanent);
        assert_eq!(
            calling.source.to_string(),
            Rejection::CallingAeTitle.reason()
        );
        let called = Rejection::CalledAeTitle.pdu();
        assert_eq!(called.source.to_string(), Rejection::CalledAeTitle.reason());
    }
}
