//! The Storage SCU: sends Part 10 files to a peer's Storage SCP over one association
//! (dicom-ul's client, blocking; run it off the async workers).
//!
//! One presentation context is proposed per SOP class, with the files' own transfer syntax
//! first, then Explicit and Implicit VR Little Endian. A file goes in its own syntax when
//! the peer accepted it, else re-encoded into the accepted uncompressed one (pulmo's
//! results are uncompressed, so this always works for them).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_object::{open_file, DefaultDicomObject};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use dicom_ul::association::{ClientAssociation, ClientAssociationOptions};
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};

use crate::command::{self, status};
use crate::contexts::{trim_uid, EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// A peer's Storage SCP: `AET@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The called AE title.
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

impl std::str::FromStr for Destination {
    type Err = String;

    /// `AET@HOST:PORT`; an IPv6 host in brackets.
    fn from_str(text: &str) -> Result<Destination, String> {
        let bad = || format!("{text:?} is not AET@HOST:PORT");
        let (ae_title, address) = text.split_once('@').ok_or_else(bad)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        if !crate::is_ae_title(ae_title) {
            return Err(format!("{ae_title:?} in {text:?} is not an AE title"));
        }
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Destination {
            ae_title: ae_title.trim().to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

/// Why a push by C-STORE failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    #[error("could not associate with {destination}")]
    Associate {
        destination: String,
        #[source]
        source: Box<dicom_ul::association::Error>,
    },
    #[error("{destination} accepted no transfer syntax pulmo can send for SOP class {sop_class}")]
    NoContext {
        destination: String,
        sop_class: String,
    },
    #[error("could not re-encode {path} in transfer syntax {transfer_syntax}")]
    Encode {
        path: PathBuf,
        transfer_syntax: String,
    },
    #[error("the association with {destination} broke")]
    Broken {
        destination: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{destination} answered status 0x{code:04X} for instance {sop_instance}{}", comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        destination: String,
        sop_instance: String,
        code: u16,
        comment: Option<String>,
    },
}

impl Error {
    /// Whether retrying cannot help: the peer refused the data itself (rather than being
    /// unreachable, busy or out of resources), or pulmo cannot read or encode its files.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Refused { code, .. } => !matches!(code >> 12, 0xA) || (code >> 8) == 0xA9,
            Error::Read { .. } | Error::NoContext { .. } | Error::Encode { .. } => true,
            Error::Associate { source, .. } => {
                matches!(source.as_ref(), dicom_ul::association::Error::Rejected { association_rj, .. }
                    if association_rj.result == dicom_ul::pdu::AssociationRJResult::Permanent)
            }
            Error::Broken { .. } => false,
        }
    }
}

/// How the SCU calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// pulmo's AE title, the calling one.
    pub calling_ae_title: String,
    /// How long to wait for the connection, and for each answer.
    pub timeout: Duration,
}

/// One file to send: its identity and bytes.
struct Instance {
    path: PathBuf,
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    object: DefaultDicomObject,
}

/// Sends every file to `destination` over one association; stops at the first failure.
pub fn store(destination: &Destination, options: &Options, files: &[PathBuf]) -> Result<(), Error> {
    let instances = files
        .iter()
        .map(|p| read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut proposed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for instance in &instances {
        let syntaxes = proposed.entry(&instance.sop_class).or_default();
        for ts in [
            instance.transfer_syntax.as_str(),
            EXPLICIT_VR_LE,
            IMPLICIT_VR_LE,
        ] {
            if !syntaxes.iter().any(|s| s == ts) {
                syntaxes.push(ts.to_owned());
            }
        }
    }
    let name = destination.to_string();
    let mut request = ClientAssociationOptions::new()
        .calling_ae_title(options.calling_ae_title.as_str())
        .called_ae_title(destination.ae_title.as_str())
        .max_pdu_length(256 << 10)
        .connection_timeout(options.timeout)
        .read_timeout(options.timeout)
        .write_timeout(options.timeout);
    for (sop_class, syntaxes) in &proposed {
        let syntaxes: Vec<&str> = syntaxes.iter().map(String::as_str).collect();
        request = request.with_presentation_context(*sop_class, syntaxes);
    }
    let mut association = request
        .establish((destination.host.as_str(), destination.port))
        .map_err(|source| Error::Associate {
            destination: name.clone(),
            source: Box::new(source),
        })?;
    let sent = instances
        .iter()
        .enumerate()
        .try_for_each(|(n, instance)| send(&mut association, &name, instance, n as u16 + 1));
    match sent {
        Ok(()) => {
            let _ = association.release();
            Ok(())
        }
        Err(err) => {
            let _ = association.abort();
            Err(err)
        }
    }
}

fn read(path: &Path) -> Result<Instance, Error> {
    let object = open_file(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let meta = object.meta();
    Ok(Instance {
        path: path.to_owned(),
        sop_class: trim_uid(meta.media_storage_sop_class_uid()).to_owned(),
        sop_instance: trim_uid(meta.media_storage_sop_instance_uid()).to_owned(),
        transfer_syntax: trim_uid(meta.transfer_syntax()).to_owned(),
        object,
    })
}

/// Sends one instance and checks its answer.
fn send(
    association: &mut ClientAssociation<std::net::TcpStream>,
    destination: &str,
    instance: &Instance,
    message_id: u16,
) -> Result<(), Error> {
    let context = association
        .presentation_contexts()
        .iter()
        .find(|c| {
            c.reason == PresentationContextResultReason::Acceptance
                && trim_uid(&c.abstract_syntax) == instance.sop_class
        })
        .cloned()
        .ok_or_else(|| Error::NoContext {
            destination: destination.to_owned(),
            sop_class: instance.sop_class.clone(),
        })?;
    let dataset = encode(instance, trim_uid(&context.transfer_syntax))?;
    let broken = |source: Box<dyn std::error::Error + Send + Sync>| Error::Broken {
        destination: destination.to_owned(),
        source,
    };
    let command = command::store_request(message_id, &instance.sop_class, &instance.sop_instance);
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context.id,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command,
            }],
        })
        .map_err(|e| broken(e.into()))?;
    let mut writer = association.send_pdata(context.id);
    writer.write_all(&dataset).map_err(|e| broken(e.into()))?;
    writer.finish().map_err(|e| broken(e.into()))?;
    let answer = match association.receive().map_err(|e| broken(e.into()))? {
        Pdu::PData { data } => command_of(data).map_err(broken)?,
        other => {
            return Err(broken(
                format!("{} instead of a C-STORE-RSP", other.short_description()).into(),
            ))
        }
    };
    let code = answer.status.unwrap_or(status::PROCESSING_FAILURE);
    let stored = code == status::SUCCESS || code == 0x0001 || (code & 0xF000) == 0xB000;
    if stored {
        return Ok(());
    }
    Err(Error::Refused {
        destination: destination.to_owned(),
        sop_instance: instance.sop_instance.clone(),
        code,
        comment: answer.error_comment,
    })
}

/// The response command set in one or more P-DATA values (a short one comes whole).
fn command_of(
    values: Vec<PDataValue>,
) -> Result<command::Command, Box<dyn std::error::Error + Send + Sync>> {
    let bytes: Vec<u8> = values
        .into_iter()
        .filter(|v| v.value_type == PDataValueType::Command)
        .flat_map(|v| v.data)
        .collect();
    Ok(command::read(&bytes)?)
}

/// The data set's bytes in `transfer_syntax`.
fn encode(instance: &Instance, transfer_syntax: &str) -> Result<Vec<u8>, Error> {
    let failed = || Error::Encode {
        path: instance.path.clone(),
        transfer_syntax: transfer_syntax.to_owned(),
    };
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(failed)?;
    // Pixel data are never transcoded: a compressed file goes in its own syntax only.
    let source_native = TransferSyntaxRegistry
        .get(&instance.transfer_syntax)
        .is_some_and(|source| !source.is_encapsulated_pixel_data());
    if transfer_syntax != instance.transfer_syntax
        && (ts.is_encapsulated_pixel_data() || !source_native)
    {
        return Err(failed());
    }
    let mut bytes = Vec::new();
    instance
        .object
        .write_dataset_with_ts(&mut bytes, ts)
        .map_err(|_| failed())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_aet_at_host_colon_port() {
        let d: Destination = "ORTHANC@pacs.local:4242".parse().unwrap();
        assert_eq!(
            (d.ae_title.as_str(), d.host.as_str(), d.port),
            ("ORTHANC", "pacs.local", 4242)
        );
        assert_eq!(d.to_string(), "ORTHANC@pacs.local:4242");
        let v6: Destination = "PACS@[::1]:104".parse().unwrap();
        assert_eq!(v6.host, "::1");
        for bad in [
            "pacs:104",
            "PACS@pacs",
            "PACS@pacs:0",
            "PACS@:104",
            "A_TITLE_TOO_LONG_X@h:1",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_of_the_data_are_permanent_and_lack_of_resources_is_not() {
        let refused = |code| Error::Refused {
            destination: "P@h:1".into(),
            sop_instance: "1.2".into(),
            code,
            comment: None,
        };
        assert!(!refused(0xA700).is_permanent());
        assert!(refused(0xA900).is_permanent());
        assert!(refused(0xC000).is_permanent());
        assert!(refused(0x0122).is_permanent());
    }
}
