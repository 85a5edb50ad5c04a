//! HTTP/2 frame layout (RFC 9113 §4, §6): the 9-byte frame header, the frame types, flags,
//! settings and error codes the session uses, and writers for the frames a server sends.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of a frame header (RFC 9113 §4.1).
pub const HEADER_LEN: usize = 9;

/// The initial flow-control window of a stream and of the connection (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: i64 = 65_535;
/// The largest window (RFC 9113 §6.9.1): 2^31 - 1.
pub const MAX_WINDOW: i64 = (1 << 31) - 1;
/// SETTINGS_MAX_FRAME_SIZE's initial value and lower bound, and its upper bound (§6.5.2).
pub const MIN_MAX_FRAME: usize = 16_384;
pub const MAX_MAX_FRAME: usize = (1 << 24) - 1;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

pub mod setting {
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    /// Sent by clients that no longer want a stream.
    #[cfg_attr(not(test), allow(dead_code))]
    Cancel = 0x8,
    CompressionError = 0x9,
    EnhanceYourCalm = 0xb,
}

/// A frame as it arrived: its parsed header and its payload.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub head: FrameHead,
    pub payload: &'a [u8],
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHead {
    /// Parse the first [`HEADER_LEN`] bytes of `b`; `None` if fewer have arrived.
    pub fn parse(b: &[u8]) -> Option<FrameHead> {
        let h = b.get(..HEADER_LEN)?;
        Some(FrameHead {
            len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            // The reserved bit is ignored on receipt (§4.1).
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }
}

/// Append a frame header.
pub fn write_head(b: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME);
    b.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    b.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

pub fn write_settings(b: &mut Vec<u8>, settings: &[(u16, u32)]) {
    write_head(b, settings.len() * 6, kind::SETTINGS, 0, 0);
    for (id, v) in settings {
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn write_settings_ack(b: &mut Vec<u8>) {
    write_head(b, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn write_ping_ack(b: &mut Vec<u8>, data: &[u8]) {
    write_head(b, 8, kind::PING, flag::ACK, 0);
    b.extend_from_slice(data);
}

pub fn write_window_update(b: &mut Vec<u8>, stream: u32, increment: u32) {
    write_head(b, 4, kind::WINDOW_UPDATE, 0, stream);
    b.extend_from_slice(&(increment & 0x7fff_ffff).to_be_bytes());
}

pub fn write_rst(b: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    write_head(b, 4, kind::RST_STREAM, 0, stream);
    b.extend_from_slice(&(code as u32).to_be_bytes());
}

pub fn write_goaway(b: &mut Vec<u8>, last_stream: u32, code: ErrorCode) {
    write_head(b, 8, kind::GOAWAY, 0, 0);
    b.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    b.extend_from_slice(&(code as u32).to_be_bytes());
}

/// The payload of a HEADERS or DATA frame without its padding (§6.1, §6.2) and, for HEADERS,
/// its priority fields; `None` when the padding is longer than the frame allows
/// (a PROTOCOL_ERROR).
pub fn unpad(flags: u8, mut payload: &[u8], priority_len: usize) -> Option<&[u8]> {
    let mut pad = 0;
    if flags & flag::PADDED != 0 {
        pad = usize::from(*payload.first()?);
        payload = &payload[1..];
    }
    if flags & flag::PRIORITY != 0 && priority_len > 0 {
        payload = payload.get(priority_len..)?;
    }
    payload.get(..payload.len().checked_sub(pad)?)
}
