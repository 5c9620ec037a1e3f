//! How answers leave: over UDP within the answer's payload size (whole records, TC set when
//! some did not fit), kept for [`crate::Server::answer_bytes`], signed with the request's TSIG
//! key, or without AA (referrals). Each is a hickory `ResponseHandler`.

use std::{iter, net::SocketAddr, sync::Arc};

use hickory_net::NetError;
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Message, Metadata, ResponseCode},
    rr::Record,
    serialize::binary::{BinDecodable, BinDecoder, BinEncoder},
};
use hickory_server::{
    server::{ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponse, MessageResponseBuilder, Queries},
};
use tokio::net::UdpSocket;
use tracing::warn;

use crate::tsig;

/// Sends answers over UDP, within the payload size of the answer's EDNS (512 without), with
/// TC set and only whole records when they do not all fit.
#[derive(Clone)]
pub(crate) struct UdpResponder {
    pub socket: Arc<UdpSocket>,
    pub dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = udp_max(response.edns());
        let (info, bytes) = encode(response, max)?;
        self.socket.send_to(&bytes, self.dst).await.map_err(NetError::from)?;
        Ok(info)
    }
}

/// The most an answer over UDP may take: the client's EDNS payload size, 512 without EDNS
/// (RFC 1035 §4.2.1, RFC 6891 §6.2.5).
fn udp_max(edns: Option<&Edns>) -> u16 {
    edns.map(|e| e.max_payload().max(512)).unwrap_or(512)
}

/// Encodes an answer within `max` bytes: whole records only, TC set when some did not fit
/// (hickory's own encoder leaves the bytes of the record that did not fit at the end).
pub(crate) fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max: u16,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let meta = *response.metadata();
    let mut bytes = Vec::with_capacity(usize::from(max).min(4096));
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    match response.destructive_emit(&mut encoder) {
        Ok(info) => {
            let end = encoder.offset();
            bytes.truncate(end);
            Ok((info, bytes))
        }
        Err(e) => {
            warn!(error = %e, "dns: cannot encode an answer");
            let mut metadata = Metadata::response_from_request(&meta);
            metadata.response_code = ResponseCode::ServFail;
            let header = Header { metadata, counts: HeaderCounts::default() };
            bytes.clear();
            let mut encoder = BinEncoder::new(&mut bytes);
            hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut encoder)?;
            Ok((ResponseInfo::from(header), bytes))
        }
    }
}

/// Keeps the answers instead of sending them (see [`Server::answer_bytes`]).
#[derive(Clone)]
pub(crate) struct Capture {
    pub tcp: bool,
    pub out: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = if self.tcp { u16::MAX } else { udp_max(response.edns()) };
        let (info, bytes) = encode(response, max)?;
        self.out.lock().unwrap_or_else(|e| e.into_inner()).push(bytes);
        Ok(info)
    }
}

/// Bytes kept free in a signed UDP answer for its TSIG record.
pub(crate) const TSIG_ROOM: u16 = 400;

/// Signs answers with the key of the request (queries answered by the `Catalog`).
#[derive(Clone)]
pub(crate) struct Signing<R> {
    pub inner: R,
    pub signed: tsig::Signed,
    pub now: u64,
    pub max: u16,
}

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for Signing<R> {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // The answer as it will go out, minus its TSIG: the MAC covers exactly these bytes.
        // It is read back and built again to carry the signature (hickory's answers are
        // iterators, spent by encoding).
        let (_, bytes) = encode(response, self.max)?;
        let message = Message::from_vec(&bytes).map_err(|e| NetError::from(e.to_string()))?;
        let mut decoder = BinDecoder::new(&bytes);
        let header = Header::read(&mut decoder).map_err(|e| NetError::from(e.to_string()))?;
        let queries = Queries::read(&mut decoder, usize::from(header.counts.queries)).map_err(|e| NetError::from(e.to_string()))?;
        let tsig = self.signed.sign(message.metadata.id, self.now, &bytes).ok_or_else(|| NetError::from("cannot sign"))?;
        let mut out = MessageResponseBuilder::new(&queries, message.edns.as_ref()).build(
            message.metadata,
            message.answers.iter(),
            message.authorities.iter(),
            iter::empty(),
            message.additionals.iter(),
        );
        out.set_signature(tsig);
        self.inner.send_response(out).await
    }
}

/// Clears AA on the way out (referrals).
#[derive(Clone)]
pub(crate) struct NotAuthoritative<R>(pub R);

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for NotAuthoritative<R> {
    async fn send_response<'a>(
        &mut self,
        mut response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        response.metadata_mut().authoritative = false;
        self.0.send_response(response).await
    }
}
