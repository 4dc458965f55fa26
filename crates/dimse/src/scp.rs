//! The Storage and Verification SCP: one association, from its A-ASSOCIATE-RQ to its
//! release or abort, over any async byte stream.
//!
//! The request is answered within the ARTIM timeout: rejected with the standard's reason
//! ([`Policy::admit`], or too many associations), or accepted with an answer per
//! presentation context ([`crate::contexts`]). Then P-DATA is read, one PDU at a time, each
//! within the idle timeout. A C-ECHO is answered at once. A C-STORE's data set fragments
//! go, behind a Part 10 header, to a sink that [`Storage::open`] gave; on the last fragment
//! [`Storage::store`] decides the status the SCU gets. A store refused before its data
//! (no room) still reads the data and drops it, then answers the refusal. Anything the
//! standard does not allow aborts the association, and a partly received instance is
//! handed back to [`Storage::discard`]: nothing half-written is ever stored.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use dicom_ul::association::read_pdu_from_wire_async;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationAC, AssociationRQ, PDataValue,
    PDataValueType, Pdu, PresentationContextNegotiated, PresentationContextResult,
    PresentationContextResultReason, UserVariableItem,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::command::{self, field, status, Command};
use crate::contexts::{self, STORAGE};
use crate::peers::{Peer, Policy, Rejection};

/// How the SCP runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// pulmo's AE title and who may call it.
    pub policy: Policy,
    /// Associations served at once; one more is rejected (transient, local limit exceeded).
    pub max_associations: usize,
    /// The largest P-DATA PDU pulmo receives (its Maximum Length), in bytes.
    pub max_pdu: u32,
    /// The largest data set one C-STORE may carry; a larger one is refused (0xA700) and
    /// the rest of it read and dropped.
    pub max_instance_bytes: u64,
    /// How long the A-ASSOCIATE-RQ may take to arrive after the connection opens.
    pub artim: Duration,
    /// How long an association may wait between two PDUs before it is aborted.
    pub idle: Duration,
}

impl Config {
    /// Defaults: 16 associations at once, 256 KiB PDUs, 1 GiB instances, a 30 s ARTIM
    /// timeout, 120 s idle.
    pub fn new(policy: Policy) -> Config {
        Config {
            policy,
            max_associations: 16,
            max_pdu: 256 << 10,
            max_instance_bytes: 1 << 30,
            artim: Duration::from_secs(30),
            idle: Duration::from_secs(120),
        }
    }
}

/// The status a C-STORE is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    /// Why, for a failure (sent as Error Comment, at most 64 characters).
    pub comment: Option<String>,
}

impl Status {
    pub fn success() -> Status {
        Status {
            code: status::SUCCESS,
            comment: None,
        }
    }

    pub fn failure(code: u16, comment: impl Into<String>) -> Status {
        Status {
            code,
            comment: Some(comment.into()),
        }
    }

    /// Success or a warning (0xB000 to 0xBFFF, 0x0001): the instance was stored.
    pub fn is_stored(&self) -> bool {
        self.code == status::SUCCESS || self.code == 0x0001 || (self.code & 0xF000) == 0xB000
    }
}

/// One instance received in full: who sent it and what it says it is.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub peer: &'a Peer,
    pub address: SocketAddr,
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax: &'a str,
}

/// Where received instances go. Each is written as a Part 10 file (preamble, file meta
/// group, then the data set as received) to a sink from [`Storage::open`].
pub trait Storage: Send + Sync {
    /// Where one instance's bytes are written.
    type Sink: AsyncWrite + Unpin + Send;

    /// Whether an instance can be taken now; when not, the refusal (0xA700 for a full disk
    /// or queue). Asked before each C-STORE's data set is read.
    fn room(&self) -> impl Future<Output = Result<(), Status>> + Send;

    /// A new sink for one instance.
    fn open(&self) -> impl Future<Output = std::io::Result<Self::Sink>> + Send;

    /// Takes a fully received instance: makes it durable and answers its status. Only a
    /// success status may be answered once the instance can no longer be lost.
    fn store(
        &self,
        sink: Self::Sink,
        instance: Received<'_>,
    ) -> impl Future<Output = Status> + Send;

    /// Drops a partly received or refused instance.
    fn discard(&self, sink: Self::Sink) -> impl Future<Output = ()> + Send;
}

/// How an association ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The SCU released it.
    Released,
    /// The SCU aborted it.
    Aborted,
    /// The connection closed without a release.
    Closed,
    /// It was rejected.
    Rejected(Rejection),
    /// No PDU came within the ARTIM or idle timeout; pulmo aborted it.
    TimedOut,
    /// The SCU broke the protocol; pulmo aborted it. Says what happened (never data).
    Protocol(String),
}

/// What happened on one connection, for the log and the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub calling_ae_title: Option<String>,
    pub called_ae_title: Option<String>,
    /// The admitted peer (its lane among others).
    pub peer: Option<Peer>,
    pub echoes: u32,
    pub stored: u32,
    pub refused: u32,
    pub ended: Ended,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            calling_ae_title: None,
            called_ae_title: None,
            peer: None,
            echoes: 0,
            stored: 0,
            refused: 0,
            ended: Ended::Closed,
        }
    }
}

/// Runs one association on `stream` from `address`: the whole of it, to its end. With
/// `busy`, the request is rejected (transient, local limit exceeded) once its AE titles
/// pass the policy.
pub async fn serve<S, H>(
    stream: S,
    address: SocketAddr,
    config: &Config,
    storage: &H,
    busy: bool,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Storage,
{
    let mut link = Link::new(stream);
    let mut outcome = Outcome::new();
    // The request itself may be larger than a P-DATA PDU (many presentation contexts).
    let limit = config.max_pdu.max(1 << 20);
    let request = match tokio::time::timeout(config.artim, link.receive(limit)).await {
        Ok(Ok(Pdu::AssociationRQ(request))) => request,
        Ok(Ok(other)) => {
            link.abort(AbortRQServiceProviderReason::UnexpectedPdu)
                .await;
            outcome.ended = Ended::Protocol(format!("{} before association", kind(&other)));
            return outcome;
        }
        Ok(Err(ended)) => {
            outcome.ended = ended;
            return outcome;
        }
        Err(_) => {
            outcome.ended = Ended::TimedOut;
            return outcome;
        }
    };
    outcome.calling_ae_title = Some(request.calling_ae_title.trim().to_owned());
    outcome.called_ae_title = Some(request.called_ae_title.trim().to_owned());
    let peer = match admit(&request, address, &config.policy, busy) {
        Ok(peer) => peer,
        Err(rejection) => {
            link.send(&Pdu::AssociationRJ(rejection.pdu())).await;
            outcome.ended = Ended::Rejected(rejection);
            return outcome;
        }
    };
    let contexts = contexts::negotiate(&request.presentation_contexts);
    let accepted = accept(&request, &contexts, config.max_pdu);
    if !link.send(&accepted).await {
        return outcome;
    }
    outcome.peer = Some(peer.clone());
    let mut association = Association {
        link,
        contexts,
        storage,
        peer,
        address,
        peer_max_pdu: peer_max_pdu(&request),
        max_instance_bytes: config.max_instance_bytes,
        command: Vec::new(),
        receiving: None,
        outcome,
    };
    association.run(config).await;
    association.outcome
}

/// The admitted peer, or why the request is rejected.
fn admit(
    request: &AssociationRQ,
    address: SocketAddr,
    policy: &Policy,
    busy: bool,
) -> Result<Peer, Rejection> {
    if request.protocol_version & 1 == 0 {
        return Err(Rejection::ProtocolVersion);
    }
    if contexts::trim_uid(&request.application_context_name) != "1.2.840.10008.3.1.1.1" {
        return Err(Rejection::ApplicationContext);
    }
    let peer = policy.admit(
        &request.calling_ae_title,
        &request.called_ae_title,
        address.ip(),
    )?;
    if busy {
        return Err(Rejection::LocalLimitExceeded);
    }
    Ok(peer)
}

/// The A-ASSOCIATE-AC for `request` with these answers.
fn accept(
    request: &AssociationRQ,
    contexts: &[PresentationContextNegotiated],
    max_pdu: u32,
) -> Pdu {
    Pdu::AssociationAC(AssociationAC {
        protocol_version: 1,
        calling_ae_title: request.calling_ae_title.clone(),
        called_ae_title: request.called_ae_title.clone(),
        application_context_name: request.application_context_name.clone(),
        presentation_contexts: contexts
            .iter()
            .map(|c| PresentationContextResult {
                id: c.id,
                reason: c.reason.clone(),
                transfer_syntax: c.transfer_syntax.clone(),
            })
            .collect(),
        user_variables: vec![
            UserVariableItem::MaxLength(max_pdu),
            UserVariableItem::ImplementationClassUID(crate::IMPLEMENTATION_CLASS_UID.to_owned()),
            UserVariableItem::ImplementationVersionName(
                crate::IMPLEMENTATION_VERSION_NAME.to_owned(),
            ),
        ],
    })
}

/// The SCU's Maximum Length (0: no limit).
fn peer_max_pdu(request: &AssociationRQ) -> u32 {
    request
        .user_variables
        .iter()
        .find_map(|v| match v {
            UserVariableItem::MaxLength(n) if *n > 0 => Some(*n),
            _ => None,
        })
        .unwrap_or(u32::MAX)
}

/// A PDU's kind, for messages.
fn kind(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Unknown { .. } => "an unknown PDU",
        Pdu::AssociationRQ(_) => "an A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "an A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "an A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA",
        Pdu::ReleaseRQ => "an A-RELEASE-RQ",
        Pdu::ReleaseRP => "an A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "an A-ABORT",
    }
}

/// The byte stream with dicom-ul's PDU reader and writer on it.
struct Link<S> {
    stream: S,
    buffer: bytes::BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Link<S> {
    fn new(stream: S) -> Link<S> {
        Link {
            stream,
            buffer: bytes::BytesMut::with_capacity(64 << 10),
        }
    }

    /// The next PDU of at most `max` bytes, or how the association ended.
    async fn receive(&mut self, max: u32) -> Result<Pdu, Ended> {
        use dicom_ul::association::Error;
        read_pdu_from_wire_async(&mut self.stream, &mut self.buffer, max, true)
            .await
            .map_err(|err| match err {
                Error::ConnectionClosed { .. } if self.buffer.is_empty() => Ended::Closed,
                err => Ended::Protocol(chain(&err)),
            })
    }

    /// Sends a PDU; false when the connection is gone.
    async fn send(&mut self, pdu: &Pdu) -> bool {
        let mut bytes = Vec::new();
        if dicom_ul::write_pdu(&mut bytes, pdu).is_err() {
            return false;
        }
        self.stream.write_all(&bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    async fn abort(&mut self, reason: AbortRQServiceProviderReason) {
        let abort = Pdu::AbortRQ {
            source: AbortRQSource::ServiceProvider(reason),
        };
        self.send(&abort).await;
        let _ = self.stream.shutdown().await;
    }
}

/// An error and its causes, on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A C-STORE whose data set is arriving.
struct Receiving<K> {
    context: u8,
    request: Command,
    transfer_syntax: String,
    /// `None` once refused (the rest of the data set is read and dropped).
    sink: Option<K>,
    refusal: Option<Status>,
    /// Data set bytes received so far.
    received: u64,
}

/// An accepted association.
struct Association<'a, S, H: Storage> {
    link: Link<S>,
    contexts: Vec<PresentationContextNegotiated>,
    storage: &'a H,
    peer: Peer,
    address: SocketAddr,
    peer_max_pdu: u32,
    max_instance_bytes: u64,
    /// The command set being assembled from its fragments.
    command: Vec<u8>,
    receiving: Option<Receiving<H::Sink>>,
    outcome: Outcome,
}

impl<S, H> Association<'_, S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Storage,
{
    async fn run(&mut self, config: &Config) {
        let ended = loop {
            let received = tokio::time::timeout(config.idle, self.link.receive(config.max_pdu));
            let pdu = match received.await {
                Ok(Ok(pdu)) => pdu,
                Ok(Err(Ended::Closed)) => break Ended::Closed,
                Ok(Err(ended)) => {
                    self.link
                        .abort(AbortRQServiceProviderReason::InvalidPduParameter)
                        .await;
                    break ended;
                }
                Err(_) => {
                    self.link
                        .abort(AbortRQServiceProviderReason::ReasonNotSpecified)
                        .await;
                    break Ended::TimedOut;
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    if let Err(broken) = self.values(data).await {
                        self.link
                            .abort(AbortRQServiceProviderReason::UnexpectedPduParameter)
                            .await;
                        break Ended::Protocol(broken);
                    }
                }
                Pdu::ReleaseRQ => {
                    self.link.send(&Pdu::ReleaseRP).await;
                    let _ = self.link.stream.shutdown().await;
                    break Ended::Released;
                }
                Pdu::AbortRQ { .. } => break Ended::Aborted,
                other => {
                    self.link
                        .abort(AbortRQServiceProviderReason::UnexpectedPdu)
                        .await;
                    break Ended::Protocol(format!("{} during the association", kind(&other)));
                }
            }
        };
        if let Some(sink) = self.receiving.take().and_then(|r| r.sink) {
            self.storage.discard(sink).await;
        }
        self.outcome.ended = ended;
    }

    /// Handles the values of one P-DATA PDU; `Err` says how the SCU broke the protocol.
    async fn values(&mut self, values: Vec<PDataValue>) -> Result<(), String> {
        for value in values {
            let id = value.presentation_context_id;
            if !self.contexts.iter().any(|c| c.id == id && accepted(c)) {
                return Err(format!(
                    "P-DATA on presentation context {id}, which was not accepted"
                ));
            }
            match value.value_type {
                PDataValueType::Command => self.command_fragment(value).await?,
                PDataValueType::Data => self.data_fragment(value).await?,
            }
        }
        Ok(())
    }

    async fn command_fragment(&mut self, value: PDataValue) -> Result<(), String> {
        if self.receiving.is_some() {
            return Err("a command arrived while a data set was being received".to_owned());
        }
        self.command.extend_from_slice(&value.data);
        if self.command.len() > command::MAX_COMMAND_BYTES {
            return Err(format!(
                "a command set longer than {} bytes",
                command::MAX_COMMAND_BYTES
            ));
        }
        if !value.is_last {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.command);
        let request = command::read(&bytes).map_err(|err| chain(&err))?;
        match request.field {
            field::C_ECHO_RQ if !request.has_data_set => {
                self.outcome.echoes += 1;
                let answer = command::response(&request, status::SUCCESS, None);
                self.respond(value.presentation_context_id, answer).await
            }
            field::C_STORE_RQ if request.has_data_set => {
                self.begin_store(value.presentation_context_id, request)
                    .await;
                Ok(())
            }
            other => Err(format!(
                "command 0x{other:04X} (with a data set: {}) is not one pulmo serves",
                request.has_data_set
            )),
        }
    }

    /// Starts receiving a C-STORE's data set, into a sink or, when refused, nowhere.
    async fn begin_store(&mut self, context: u8, request: Command) {
        let negotiated = self
            .contexts
            .iter()
            .find(|c| c.id == context)
            .expect("only accepted contexts get here. This is a bug.");
        let transfer_syntax = negotiated.transfer_syntax.clone();
        let refusal = match (&request.sop_class_uid, &request.sop_instance_uid) {
            (Some(class), Some(_)) if !STORAGE.contains(&class.as_str()) => Some(Status::failure(
                status::SOP_CLASS_NOT_SUPPORTED,
                "pulmo stores CT images only",
            )),
            (Some(class), Some(_)) if *class != negotiated.abstract_syntax => {
                Some(Status::failure(
                    status::DOES_NOT_MATCH,
                    "SOP class differs from the context's",
                ))
            }
            (Some(_), Some(_)) => None,
            _ => Some(Status::failure(
                status::CANNOT_UNDERSTAND,
                "the C-STORE-RQ lacks its affected SOP class or instance",
            )),
        };
        let mut receiving = Receiving {
            context,
            request,
            transfer_syntax,
            sink: None,
            refusal,
            received: 0,
        };
        if receiving.refusal.is_none() {
            match self.open(&receiving).await {
                Ok(sink) => receiving.sink = Some(sink),
                Err(refusal) => receiving.refusal = Some(refusal),
            }
        }
        self.receiving = Some(receiving);
    }

    /// A sink with the Part 10 header already written, or the refusal.
    async fn open(&self, receiving: &Receiving<H::Sink>) -> Result<H::Sink, Status> {
        self.storage.room().await?;
        let header = part10_header(receiving, &self.peer.ae_title)?;
        let out_of_resources = |_| {
            Status::failure(
                status::OUT_OF_RESOURCES,
                "pulmo could not write the instance",
            )
        };
        let mut sink = self.storage.open().await.map_err(out_of_resources)?;
        if let Err(err) = sink.write_all(&header).await {
            self.storage.discard(sink).await;
            return Err(out_of_resources(err));
        }
        Ok(sink)
    }

    async fn data_fragment(&mut self, value: PDataValue) -> Result<(), String> {
        let Some(receiving) = self.receiving.as_mut() else {
            return Err("a data set fragment arrived without a C-STORE-RQ".to_owned());
        };
        if receiving.context != value.presentation_context_id {
            return Err("a data set fragment on another presentation context".to_owned());
        }
        receiving.received += value.data.len() as u64;
        let refusal = if receiving.received > self.max_instance_bytes {
            let limit = self.max_instance_bytes >> 20;
            Some(format!(
                "the instance is larger than pulmo takes ({limit} MiB)"
            ))
        } else if let Some(sink) = receiving.sink.as_mut() {
            let written = sink.write_all(&value.data).await;
            written
                .err()
                .map(|_| "pulmo could not write the instance".to_owned())
        } else {
            None
        };
        if let Some(comment) = refusal {
            if let Some(sink) = receiving.sink.take() {
                self.storage.discard(sink).await;
            }
            if receiving.refusal.is_none() {
                receiving.refusal = Some(Status::failure(status::OUT_OF_RESOURCES, comment));
            }
        }
        if !value.is_last {
            return Ok(());
        }
        let receiving = self.receiving.take().expect("checked at the top");
        let status = self
            .finish_store(
                &receiving.request,
                receiving.sink,
                &receiving.transfer_syntax,
                receiving.refusal,
            )
            .await;
        if status.is_stored() {
            self.outcome.stored += 1;
        } else {
            self.outcome.refused += 1;
        }
        let answer = command::response(&receiving.request, status.code, status.comment.as_deref());
        self.respond(receiving.context, answer).await
    }

    /// The status of a fully received C-STORE.
    async fn finish_store(
        &self,
        request: &Command,
        sink: Option<H::Sink>,
        transfer_syntax: &str,
        refusal: Option<Status>,
    ) -> Status {
        let sink = match (sink, refusal) {
            (Some(sink), None) => sink,
            (sink, refusal) => {
                if let Some(sink) = sink {
                    self.storage.discard(sink).await;
                }
                return refusal.unwrap_or_else(|| {
                    Status::failure(status::PROCESSING_FAILURE, "the instance was not received")
                });
            }
        };
        let instance = Received {
            peer: &self.peer,
            address: self.address,
            sop_class_uid: request.sop_class_uid.as_deref().unwrap_or_default(),
            sop_instance_uid: request.sop_instance_uid.as_deref().unwrap_or_default(),
            transfer_syntax,
        };
        self.storage.store(sink, instance).await
    }

    /// Sends a command set as one or more P-DATA PDUs within the SCU's Maximum Length.
    async fn respond(&mut self, context: u8, bytes: Vec<u8>) -> Result<(), String> {
        // A PDV header is 6 bytes and a P-DATA PDU's own 6 more are not counted in its length.
        let room = (self.peer_max_pdu.saturating_sub(6).max(64)) as usize;
        let chunks: Vec<&[u8]> = bytes.chunks(room).collect();
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let pdu = Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context,
                    value_type: PDataValueType::Command,
                    is_last: n == last,
                    data: chunk.to_vec(),
                }],
            };
            if !self.link.send(&pdu).await {
                return Err("the connection closed before the answer was sent".to_owned());
            }
        }
        Ok(())
    }
}

fn accepted(context: &PresentationContextNegotiated) -> bool {
    context.reason == PresentationContextResultReason::Acceptance
}

/// The preamble, `DICM` and file meta group of a received instance.
fn part10_header<K>(receiving: &Receiving<K>, calling: &str) -> Result<Vec<u8>, Status> {
    let request = &receiving.request;
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(request.sop_class_uid.as_deref().unwrap_or_default())
        .media_storage_sop_instance_uid(request.sop_instance_uid.as_deref().unwrap_or_default())
        .transfer_syntax(receiving.transfer_syntax.as_str())
        .implementation_class_uid(crate::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(crate::IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(calling)
        .build()
        .map_err(|_| {
            Status::failure(
                status::CANNOT_UNDERSTAND,
                "the UIDs of the C-STORE-RQ are not valid",
            )
        })?;
    let mut header = vec![0; 128];
    header.extend_from_slice(b"DICM");
    meta.write(&mut header).map_err(|_| {
        Status::failure(
            status::CANNOT_UNDERSTAND,
            "the UIDs of the C-STORE-RQ are not valid",
        )
    })?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contexts::{CT_IMAGE_STORAGE, EXPLICIT_VR_LE};
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use std::sync::Mutex;

    /// Keeps what it is given, and refuses everything while `full`.
    #[derive(Default)]
    struct Memory {
        stored: Mutex<Vec<Vec<u8>>>,
        full: bool,
    }

    impl Storage for Memory {
        type Sink = Vec<u8>;

        async fn room(&self) -> Result<(), Status> {
            match self.full {
                true => Err(Status::failure(status::OUT_OF_RESOURCES, "full")),
                false => Ok(()),
            }
        }

        async fn open(&self) -> std::io::Result<Vec<u8>> {
            Ok(Vec::new())
        }

        async fn store(&self, sink: Vec<u8>, _instance: Received<'_>) -> Status {
            self.stored.lock().unwrap().push(sink);
            Status::success()
        }

        async fn discard(&self, _sink: Vec<u8>) {}
    }

    fn value(value_type: PDataValueType, data: Vec<u8>) -> Pdu {
        Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                value_type,
                is_last: true,
                data,
            }],
        }
    }

    /// An SCU's side of one C-STORE of a tiny data set, then a release, as bytes.
    fn one_store() -> Vec<u8> {
        let request = crate::testing::request("PULMO", CT_IMAGE_STORAGE, EXPLICIT_VR_LE);
        let dataset = InMemDicomObject::from_element_iter([DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        )]);
        let mut data = Vec::new();
        let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
        dataset.write_dataset_with_ts(&mut data, &ts).unwrap();
        let command = command::store_request(9, CT_IMAGE_STORAGE, "1.2.3.4");
        crate::testing::bytes_of(&[
            request,
            value(PDataValueType::Command, command),
            value(PDataValueType::Data, data),
            Pdu::ReleaseRQ,
        ])
    }

    /// Runs the SCP on `bytes`; returns how it ended and the C-STORE-RSP's status.
    async fn run(bytes: &[u8], storage: &Memory) -> (Ended, Option<u16>) {
        let mut stream = tokio::io::join(bytes, Vec::new());
        let config = Config::new(Policy {
            ae_title: "PULMO".into(),
            peers: None,
        });
        let address = SocketAddr::from(([127, 0, 0, 1], 4000));
        let outcome = serve(&mut stream, address, &config, storage, false).await;
        let answers = stream.into_inner().1;
        let mut rest = &answers[..];
        let mut status = None;
        while let Ok(Some(pdu)) = dicom_ul::read_pdu(&mut rest, 1 << 20, false) {
            if let Pdu::PData { data } = pdu {
                status = command::read(&data[0].data).unwrap().status;
            }
        }
        (outcome.ended, status)
    }

    #[tokio::test]
    async fn a_stored_instance_is_a_part10_file_answered_success() {
        let storage = Memory::default();
        let (ended, status) = run(&one_store(), &storage).await;
        assert_eq!((ended, status), (Ended::Released, Some(status::SUCCESS)));
        let file = storage.stored.lock().unwrap().remove(0);
        assert_eq!(&file[128..132], b"DICM");
        let object = dicom_object::OpenFileOptions::new()
            .from_reader(&file[128..])
            .unwrap();
        assert_eq!(object.meta().transfer_syntax(), EXPLICIT_VR_LE);
        assert_eq!(
            object.meta().media_storage_sop_class_uid(),
            CT_IMAGE_STORAGE
        );
        let sop = object
            .element(tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(sop.trim_end_matches('\0'), "1.2.3.4");
    }

    #[tokio::test]
    async fn no_room_is_answered_out_of_resources_after_the_data_set() {
        let storage = Memory {
            full: true,
            ..Memory::default()
        };
        let (ended, status) = run(&one_store(), &storage).await;
        assert_eq!(
            (ended, status),
            (Ended::Released, Some(status::OUT_OF_RESOURCES))
        );
        assert!(storage.stored.lock().unwrap().is_empty());
    }
}
