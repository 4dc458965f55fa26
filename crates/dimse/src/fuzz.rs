//! Entry points for fuzz targets: raw bytes in, no panic out.

use std::net::SocketAddr;

use crate::peers::Policy;
use crate::scp::{self, Config, Received, Status, Storage};

/// A storage that keeps nothing and takes everything.
struct Nowhere;

impl Storage for Nowhere {
    type Sink = tokio::io::Sink;

    async fn room(&self) -> Result<(), Status> {
        Ok(())
    }

    async fn open(&self) -> std::io::Result<Self::Sink> {
        Ok(tokio::io::sink())
    }

    async fn store(&self, _sink: Self::Sink, _instance: Received<'_>) -> Status {
        Status::success()
    }

    async fn discard(&self, _sink: Self::Sink) {}
}

/// Runs the SCP side of one association whose SCU sends `bytes` (then closes), as pulmo
/// called `PULMO` from loopback without a peers file; what the SCP answers is dropped.
/// Returns how it ended, for the caller's curiosity.
pub fn association(bytes: &[u8]) -> scp::Ended {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime always builds. This is a bug.");
    let stream = tokio::io::join(bytes, tokio::io::sink());
    let config = Config::new(Policy {
        ae_title: "PULMO".to_owned(),
        peers: None,
    });
    let address = SocketAddr::from(([127, 0, 0, 1], 104));
    let outcome = runtime.block_on(scp::serve(stream, address, &config, &Nowhere, false));
    outcome.ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command;
    use crate::contexts::{IMPLICIT_VR_LE, VERIFICATION};
    use crate::testing::bytes_of;
    use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
    use proptest::prelude::*;

    fn request(called: &str) -> Pdu {
        crate::testing::request(called, VERIFICATION, IMPLICIT_VR_LE)
    }

    fn echo() -> Pdu {
        Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command::echo_request(1),
            }],
        }
    }

    #[test]
    fn an_echo_over_memory_ends_released() {
        let bytes = bytes_of(&[request("PULMO"), echo(), Pdu::ReleaseRQ]);
        assert_eq!(association(&bytes), scp::Ended::Released);
        let wrong = bytes_of(&[request("OTHER")]);
        assert_eq!(
            association(&wrong),
            scp::Ended::Rejected(crate::Rejection::CalledAeTitle)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_end_the_association_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096)
        ) {
            association(&bytes);
        }

        #[test]
        fn any_bytes_after_an_accepted_request_end_it_without_a_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..4096)
        ) {
            let mut bytes = bytes_of(&[request("PULMO")]);
            bytes.extend_from_slice(&tail);
            association(&bytes);
        }
    }
}
