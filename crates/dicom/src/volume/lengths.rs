//! Value lengths checked against the bytes that hold them, before any parser allocates.
//!
//! dicom-parser reserves and zero-fills a value's declared length before reading it, so a
//! 200-byte file whose one element claims 4 GiB costs 4 GiB of memory and seconds of work
//! before it fails as truncated, and a server receiving such files can be run out of
//! memory. This walk reads only element headers (values are skipped, sequences and items
//! entered) and refuses the first defined length that does not fit in its container or in
//! what is left of the stream. Anything else unusual (an unknown VR, an early end) stops the
//! walk quietly: the parser that follows reports it with its own words. On the way it notes
//! what the image's Pixel Data looked like ([`PixelData`]), which admission checks against
//! the header.

use std::io::{BufReader, Cursor, ErrorKind, Read, Seek};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};

/// Deeper nesting than this is refused (hostile input; real objects nest a few levels).
const MAX_DEPTH: u32 = 64;
const UNDEFINED: u32 = u32::MAX;
/// An item: of a sequence, or a fragment of encapsulated pixel data.
pub const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);

/// A value that cannot be where its header says.
#[derive(Debug, thiserror::Error)]
pub enum LengthError {
    #[error("element {tag} at byte {at} claims {claimed} bytes, but only {left} are left")]
    TooLong {
        tag: Tag,
        at: u64,
        claimed: u32,
        left: u64,
    },
    #[error("sequences nested more than {MAX_DEPTH} deep at byte {at}")]
    TooDeep { at: u64 },
    #[error("could not read the element headers")]
    Io(#[source] std::io::Error),
}

/// A byte stream the walk can skip through cheaply.
pub trait Stream: Read + Seek {
    fn skip(&mut self, len: u32) -> std::io::Result<()>;
}

impl Stream for BufReader<std::fs::File> {
    fn skip(&mut self, len: u32) -> std::io::Result<()> {
        // Within the buffer this moves the cursor without a system call.
        self.seek_relative(i64::from(len))
    }
}

impl Stream for Cursor<&[u8]> {
    fn skip(&mut self, len: u32) -> std::io::Result<()> {
        self.set_position(self.position() + u64::from(len));
        Ok(())
    }
}

/// How the walked data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
}

impl Encoding {
    /// The encoding of a transfer syntax's data set; `None` for deflated ones (their bytes
    /// are compressed, so there are no headers to walk).
    pub fn of_syntax(uid: &str) -> Option<Self> {
        match trim_syntax_uid(uid) {
            "1.2.840.10008.1.2" => Some(Encoding::ImplicitLittle),
            "1.2.840.10008.1.2.2" => Some(Encoding::ExplicitBig),
            "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" | "1.2.840.10008.1.2.4.205" => None,
            _ => Some(Encoding::ExplicitLittle),
        }
    }
}

/// A transfer syntax UID as dicom-transfer-syntax-registry looks it up: without trailing
/// whitespace of any kind or NULs. The walk must take the syntax the parser takes (found
/// by fuzzing: `1.2.840.10008.1.2` and a tab was walked as explicit VR and parsed as
/// implicit, and the parser reserved 4 GiB for a value nobody had checked).
pub fn trim_syntax_uid(uid: &str) -> &str {
    uid.trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// What the file meta group says, as far as the walk needs it.
#[derive(Debug, Default)]
pub struct Meta {
    pub transfer_syntax_uid: Option<String>,
    /// Where the data set starts: the first byte after the group. `None` when the
    /// stream ended or stopped making sense first.
    pub dataset_at: Option<u64>,
}

/// Walks the file meta group from the reader's position (just after `DICM`) and returns
/// its transfer syntax and end; the reader is left somewhere inside or after the group.
pub fn check_meta<R: Stream>(reader: &mut R, total: u64) -> Result<Meta, LengthError> {
    let mut walk = Walk::new(reader, Encoding::ExplicitLittle)?;
    let mut meta = Meta::default();
    loop {
        let at = walk.pos;
        let Some(tag) = walk.tag()? else {
            return Ok(meta);
        };
        if tag.group() != 0x0002 {
            meta.dataset_at = Some(at);
            return Ok(meta);
        }
        let Some(header) = walk.rest_of_header(tag, at)? else {
            return Ok(meta);
        };
        if header.len == UNDEFINED {
            return Ok(meta);
        }
        walk.fits(&header, total)?;
        if header.tag == tags::TRANSFER_SYNTAX_UID && header.len <= 64 {
            let mut value = vec![0; header.len as usize];
            if walk.read(&mut value)?.is_none() {
                return Ok(meta);
            }
            meta.transfer_syntax_uid = Some(String::from_utf8_lossy(&value).into_owned());
        } else {
            walk.skip(header.len)?;
        }
    }
}

/// What the top-level Pixel Data of a walked data set looks like, from its headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelData {
    /// A value of defined length, all of it within the stream.
    Native { len: u32 },
    /// Encapsulated: `items` items (the basic offset table, then the fragments), and
    /// whether the sequence delimiter followed them inside the stream.
    Encapsulated { items: u32, delimited: bool },
    /// The data set was walked to its end and holds none.
    Absent,
    /// The stream ended inside an element header at byte `at`, before Pixel Data.
    Cut { at: u64 },
}

/// What a walk of a data set found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// Where the image's Pixel Data ends, when it was walked through.
    pub pixels_end: Option<u64>,
    /// The image's Pixel Data as its headers say; `None` when the walk stopped early on
    /// something it leaves to the parser, or was told to stop before Pixel Data.
    pub pixel_data: Option<PixelData>,
    /// Where the walk lost the structure (an item where none can be, an item whose
    /// elements do not end with it, fragments without their delimiter), if it did.
    pub lost_at: Option<u64>,
}

impl Walked {
    /// How far the parser may read a stream of `total` bytes: to the end of the image's
    /// Pixel Data, and never past where the walk lost the structure. dicom-parser reads on
    /// where the walk could not follow, and would reserve lengths nobody checked (found by
    /// fuzzing, in several shapes); what it is given stops there, and it reports the rest
    /// as missing or cut short.
    pub fn parser_end(&self, total: u64) -> u64 {
        let pixels_end = self.pixels_end.unwrap_or(total);
        pixels_end.min(self.lost_at.unwrap_or(total))
    }
}

/// Walks a data set from the reader's position to the end of the stream (`total` bytes),
/// up to and including Pixel Data, or only up to it when `header_only`. Says where the
/// image's Pixel Data ends when it was walked through, so that the parser can be given
/// the stream up to there and nothing after, and what that Pixel Data looked like.
pub fn check_dataset<R: Stream>(
    reader: &mut R,
    encoding: Encoding,
    total: u64,
    header_only: bool,
) -> Result<Walked, LengthError> {
    let mut walk = Walk::new(reader, encoding)?;
    walk.header_only = header_only;
    walk.dataset(total, 0, true)?;
    let pixel_data = match (walk.pixel_data, walk.cut_at) {
        (Some(found), _) => Some(found),
        (None, _) if header_only => None,
        (None, Some(at)) => Some(PixelData::Cut { at }),
        (None, None) if walk.pos >= total => Some(PixelData::Absent),
        (None, None) => None,
    };
    Ok(Walked {
        pixels_end: walk.pixels_end,
        pixel_data,
        lost_at: walk.lost_at,
    })
}

/// How much of a defined-length value dicom-parser reads: all of it, except for binary
/// numbers, of which it reads only whole ones. A US of length 3 is one number, and its
/// third byte is read as the first of the next element's tag; the walk follows, so that
/// the lengths it checks are those the parser will reserve (found by fuzzing).
fn parsed_len(header: &Header) -> u32 {
    let vr = header.vr.unwrap_or_else(|| implicit_vr(header.tag));
    let size = match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::AT | VR::UL | VR::SL | VR::OL | VR::FL | VR::OF => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    };
    header.len - header.len % size
}

/// The VR dicom-encoding gives an element read without one (implicit VR, or an item or
/// delimiter): OW for pixel and overlay data, the dictionary's (relaxed), else UN.
fn implicit_vr(tag: Tag) -> VR {
    if tag == tags::PIXEL_DATA || (tag.group() >> 8 == 0x60 && tag.element() == 0x3000) {
        return VR::OW;
    }
    if tag.group() == 0xFFFE {
        return VR::UN;
    }
    StandardDataDictionary
        .by_tag(tag)
        .map_or(VR::UN, |entry| entry.vr().relaxed())
}

struct Header {
    tag: Tag,
    vr: Option<VR>,
    len: u32,
    /// Where the header started.
    at: u64,
}

/// How a walk of one data set ended.
enum End {
    /// The container's end, the stream's end, or a reason to leave the rest to the parser.
    Done,
    /// An item delimitation item: the end of an undefined-length item.
    ItemEnd,
}

struct Walk<'r, R> {
    reader: &'r mut R,
    pos: u64,
    encoding: Encoding,
    header_only: bool,
    /// Where the top-level Pixel Data ends, once walked.
    pixels_end: Option<u64>,
    /// What the top-level Pixel Data looked like, once walked.
    pixel_data: Option<PixelData>,
    /// Where the header being read started.
    header_at: u64,
    /// Where the header that the stream ended in the middle of started, if it did.
    cut_at: Option<u64>,
    /// Where the walk first lost the structure, if it did.
    lost_at: Option<u64>,
}

impl<'r, R: Stream> Walk<'r, R> {
    fn new(reader: &'r mut R, encoding: Encoding) -> Result<Self, LengthError> {
        let pos = reader.stream_position().map_err(LengthError::Io)?;
        Ok(Walk {
            reader,
            pos,
            encoding,
            header_only: false,
            pixels_end: None,
            pixel_data: None,
            header_at: pos,
            cut_at: None,
            lost_at: None,
        })
    }

    fn dataset(&mut self, end: u64, depth: u32, top: bool) -> Result<End, LengthError> {
        if depth > MAX_DEPTH {
            return Err(LengthError::TooDeep { at: self.pos });
        }
        while self.pos < end {
            let Some(header) = self.header()? else {
                return Ok(End::Done);
            };
            // An item or a sequence delimiter where an element belongs is, to dicom-parser,
            // an element like any other (with a 32-bit length), and so it is here: stopping
            // would leave the lengths after it unchecked while the parser reads on (found by
            // fuzzing). An item delimiter closes the item it is in, and outside any sequence
            // the parser passes over it.
            match header.tag {
                ITEM_END if top => continue,
                ITEM_END => return Ok(End::ItemEnd),
                _ => {}
            }
            // Encapsulated pixel data holds fragments, not data sets, at any depth (an
            // icon image's too). Any other undefined-length value, OB and OW included, is
            // a sequence to dicom-parser, and so it is walked (taking it for fragments let
            // the parser read the items' elements unchecked: found by fuzzing). The scan
            // of a header stops before the image's own pixels, decoding right after them
            // (the parser reads no further: trailing padding or junk is not the image's).
            let pixels = header.tag == tags::PIXEL_DATA;
            let stop = pixels && top && self.header_only;
            let fragments = pixels;
            if header.len == UNDEFINED {
                if stop {
                    return Ok(End::Done);
                }
                let inner = if header.vr == Some(VR::UN) {
                    Encoding::ImplicitLittle
                } else {
                    self.encoding
                };
                let outer = std::mem::replace(&mut self.encoding, inner);
                let walked = if fragments {
                    self.fragments(end, pixels && top)
                } else {
                    self.items(end, depth)
                };
                self.encoding = outer;
                if !walked? {
                    return Ok(End::Done);
                }
                if pixels && top {
                    self.pixels_end = Some(self.pos);
                    return Ok(End::Done);
                }
                continue;
            }
            if stop {
                // Its length is the decoder's to check, against the image's size too.
                return Ok(End::Done);
            }
            self.fits(&header, end)?;
            if pixels && top {
                self.pixels_end = Some(self.pos + u64::from(header.len));
                self.pixel_data = Some(PixelData::Native { len: header.len });
                return Ok(End::Done);
            }
            if self.is_sequence(&header) {
                let item_end = self.pos + u64::from(header.len);
                if !self.items(item_end, depth)? {
                    return Ok(End::Done);
                }
                if self.pos != item_end {
                    self.lost(self.pos.min(item_end));
                    return Ok(End::Done);
                }
            } else {
                self.skip(parsed_len(&header))?;
            }
        }
        Ok(End::Done)
    }

    /// The items of a sequence, up to its delimiter or `end`; false when the walk should stop.
    fn items(&mut self, end: u64, depth: u32) -> Result<bool, LengthError> {
        while self.pos < end {
            let Some(item) = self.item_header()? else {
                return Ok(false);
            };
            match item.tag {
                SEQUENCE_END => return Ok(true),
                ITEM if item.len == UNDEFINED => {
                    if !matches!(self.dataset(end, depth + 1, false)?, End::ItemEnd) {
                        self.lost(self.pos);
                        return Ok(false);
                    }
                }
                ITEM => {
                    self.fits(&item, end)?;
                    let item_end = self.pos + u64::from(item.len);
                    self.dataset(item_end, depth + 1, false)?;
                    if self.pos != item_end {
                        self.lost(self.pos.min(item_end));
                        return Ok(false);
                    }
                }
                _ => {
                    self.lost(item.at);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Encapsulated pixel data: items of raw bytes up to the sequence delimiter; false when
    /// the delimiter was not reached. What was found is kept when `record`ing the image's.
    fn fragments(&mut self, end: u64, record: bool) -> Result<bool, LengthError> {
        let mut items = 0;
        let delimited = loop {
            let Some(item) = self.item_header()? else {
                break false;
            };
            match item.tag {
                SEQUENCE_END => break true,
                ITEM if item.len != UNDEFINED => {
                    self.fits(&item, end)?;
                    self.skip(item.len)?;
                    items += 1;
                }
                _ => {
                    self.lost(item.at);
                    break false;
                }
            }
        };
        if record {
            self.pixel_data = Some(PixelData::Encapsulated { items, delimited });
        }
        Ok(delimited)
    }

    /// Notes that the structure was lost at byte `at` (the first time counts); nothing
    /// when the stream ended there, which the parser finds for itself.
    fn lost(&mut self, at: u64) {
        if self.cut_at.is_none() {
            self.lost_at.get_or_insert(at);
        }
    }

    fn is_sequence(&self, header: &Header) -> bool {
        match header.vr {
            Some(vr) => vr == VR::SQ,
            None => StandardDataDictionary
                .by_tag(header.tag)
                .is_some_and(|entry| matches!(entry.vr(), VirtualVr::Exact(VR::SQ))),
        }
    }

    fn fits(&self, header: &Header, end: u64) -> Result<(), LengthError> {
        let left = end.saturating_sub(self.pos);
        if u64::from(header.len) > left {
            return Err(LengthError::TooLong {
                tag: header.tag,
                at: header.at,
                claimed: header.len,
                left,
            });
        }
        Ok(())
    }

    /// The next element header; `None` at the end of the stream.
    fn header(&mut self) -> Result<Option<Header>, LengthError> {
        let at = self.pos;
        let Some(tag) = self.tag()? else {
            return Ok(None);
        };
        self.rest_of_header(tag, at)
    }

    /// The VR and length after `tag`, read from `at`.
    fn rest_of_header(&mut self, tag: Tag, at: u64) -> Result<Option<Header>, LengthError> {
        if tag.group() == 0xFFFE || self.encoding == Encoding::ImplicitLittle {
            let Some(len) = self.u32()? else {
                return Ok(None);
            };
            return Ok(Some(Header {
                tag,
                vr: None,
                len,
                at,
            }));
        }
        let mut code = [0; 2];
        if self.read(&mut code)?.is_none() {
            return Ok(None);
        }
        // As dicom-encoding reads it: an unknown VR is UN, and only these have a 16-bit
        // length (PS3.5 7.1.2); every other VR has two reserved bytes and 32 bits.
        let vr = VR::from_binary(code).unwrap_or(VR::UN);
        let long = !matches!(
            vr,
            VR::AE
                | VR::AS
                | VR::AT
                | VR::CS
                | VR::DA
                | VR::DS
                | VR::DT
                | VR::FL
                | VR::FD
                | VR::IS
                | VR::LO
                | VR::LT
                | VR::PN
                | VR::SH
                | VR::SL
                | VR::SS
                | VR::ST
                | VR::TM
                | VR::UI
                | VR::UL
                | VR::US
        );
        let len = if long {
            let mut reserved = [0; 2];
            if self.read(&mut reserved)?.is_none() {
                return Ok(None);
            }
            self.u32()?
        } else {
            self.u16()?.map(u32::from)
        };
        Ok(len.map(|len| Header {
            tag,
            vr: Some(vr),
            len,
            at,
        }))
    }

    /// An item or delimiter header: tag and 32-bit length, no VR.
    fn item_header(&mut self) -> Result<Option<Header>, LengthError> {
        let at = self.pos;
        let Some(tag) = self.tag()? else {
            return Ok(None);
        };
        Ok(self.u32()?.map(|len| Header {
            tag,
            vr: None,
            len,
            at,
        }))
    }

    fn tag(&mut self) -> Result<Option<Tag>, LengthError> {
        self.header_at = self.pos;
        let Some(group) = self.u16()? else {
            return Ok(None);
        };
        Ok(self.u16()?.map(|element| Tag(group, element)))
    }

    fn u16(&mut self) -> Result<Option<u16>, LengthError> {
        let mut bytes = [0; 2];
        Ok(self.read(&mut bytes)?.map(|()| match self.encoding {
            Encoding::ExplicitBig => u16::from_be_bytes(bytes),
            _ => u16::from_le_bytes(bytes),
        }))
    }

    fn u32(&mut self) -> Result<Option<u32>, LengthError> {
        let mut bytes = [0; 4];
        Ok(self.read(&mut bytes)?.map(|()| match self.encoding {
            Encoding::ExplicitBig => u32::from_be_bytes(bytes),
            _ => u32::from_le_bytes(bytes),
        }))
    }

    /// Fills `buf`; `None` at the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> Result<Option<()>, LengthError> {
        match self.reader.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(Some(()))
            }
            Err(err) if err.kind() == ErrorKind::UnexpectedEof => {
                self.cut_at.get_or_insert(self.header_at);
                Ok(None)
            }
            Err(err) => Err(LengthError::Io(err)),
        }
    }

    /// Skips a value whose length was checked.
    fn skip(&mut self, len: u32) -> Result<(), LengthError> {
        self.reader.skip(len).map_err(LengthError::Io)?;
        self.pos += u64::from(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An explicit VR little endian element with a 16- or 32-bit length.
    fn el(group: u16, element: u16, vr: &[u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
        let mut out = [group.to_le_bytes(), element.to_le_bytes()].concat();
        out.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&len.to_le_bytes());
        } else {
            out.extend_from_slice(&(len as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn item(tag: Tag, len: u32, value: &[u8]) -> Vec<u8> {
        let mut out = [tag.0.to_le_bytes(), tag.1.to_le_bytes()].concat();
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn check(bytes: &[u8], encoding: Encoding, header_only: bool) -> Result<(), LengthError> {
        check_dataset(
            &mut Cursor::new(bytes),
            encoding,
            bytes.len() as u64,
            header_only,
        )
        .map(|_| ())
    }

    /// Nested sequences (defined and undefined lengths) and encapsulated pixel data.
    fn well_formed() -> Vec<u8> {
        let inner = el(0x0008, 0x1150, b"UI", 4, b"1.2\0");
        let defined_item = item(ITEM, inner.len() as u32, &inner);
        let undefined_item = [item(ITEM, UNDEFINED, &inner), item(ITEM_END, 0, &[])].concat();
        let items = [defined_item, undefined_item].concat();
        let pixels = [
            item(ITEM, 0, &[]),
            item(ITEM, 6, b"\xff\xd8\xff\xff\xff\xff"),
            item(SEQUENCE_END, 0, &[]),
        ]
        .concat();
        [
            el(0x0008, 0x0060, b"CS", 2, b"CT"),
            el(0x0008, 0x1115, b"SQ", items.len() as u32, &items),
            el(0x0008, 0x1140, b"SQ", UNDEFINED, &[]),
            items.clone(),
            item(SEQUENCE_END, 0, &[]),
            el(0x7FE0, 0x0010, b"OB", UNDEFINED, &pixels),
            el(0xFFFC, 0xFFFC, b"OB", 2, &[0, 0]),
        ]
        .concat()
    }

    #[test]
    fn well_formed_nesting_and_fragments_pass() {
        check(&well_formed(), Encoding::ExplicitLittle, false).unwrap();
        check(&well_formed(), Encoding::ExplicitLittle, true).unwrap();
    }

    #[test]
    fn the_walk_says_where_pixel_data_ends_and_ignores_what_follows() {
        let mut bytes = well_formed();
        let padding = el(0xFFFC, 0xFFFC, b"OB", 2, &[0, 0]).len();
        let pixels_end = (bytes.len() - padding) as u64;
        // Junk after the image (a cut element) is not the walk's business.
        bytes.extend_from_slice(&[0, 0, 0, 0, b'O', b'B', 0, 0, 0xff, 0xff, 0xff]);
        let total = bytes.len() as u64;
        let walked = check_dataset(
            &mut Cursor::new(&bytes[..]),
            Encoding::ExplicitLittle,
            total,
            false,
        );
        assert_eq!(walked.unwrap().pixels_end, Some(pixels_end));
        let scanned = check_dataset(
            &mut Cursor::new(&bytes[..]),
            Encoding::ExplicitLittle,
            total,
            true,
        );
        assert_eq!(scanned.unwrap().pixels_end, None);
    }

    #[test]
    fn a_value_longer_than_the_stream_is_refused_with_its_tag() {
        let bytes = [
            el(0x0008, 0x0060, b"CS", 2, b"CT"),
            el(0x7FE0, 0x0010, b"OW", 0xF000_0000, &[0; 16]),
        ]
        .concat();
        // The header scan stops before Pixel Data; decoding checks it.
        check(&bytes, Encoding::ExplicitLittle, true).unwrap();
        let err = check(&bytes, Encoding::ExplicitLittle, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "element (7FE0,0010) at byte 10 claims 4026531840 bytes, but only 16 are left"
        );
    }

    /// Found by the `decode` fuzz target: an item header where an element belongs stopped
    /// the walk, dicom-parser read it as an element and went on to reserve and zero-fill
    /// the 4 GiB a later element claimed (2.4 GiB of memory for a 2 KB file).
    #[test]
    fn the_lengths_after_a_stray_item_or_delimiter_are_still_checked() {
        let huge = el(0x0009, 0x1001, b"OB", 0xFFFF_FFF0, &[0; 16]);
        let modality = el(0x0008, 0x0060, b"CS", 2, b"CT");
        let strays = [
            item(ITEM, 4, b"abcd"),
            item(SEQUENCE_END, 0, &[]),
            item(ITEM_END, 0, &[]),
        ];
        for stray in strays {
            let bytes = [modality.clone(), stray, huge.clone()].concat();
            let err = check(&bytes, Encoding::ExplicitLittle, true).unwrap_err();
            assert!(err.to_string().starts_with("element (0009,1001)"), "{err}");
        }
        // Inside an item, where the fuzzer found it.
        let inner = [modality.clone(), item(ITEM, 4, b"abcd")].concat();
        let items = item(ITEM, inner.len() as u32, &inner);
        let sequence = el(0x0008, 0x1115, b"SQ", items.len() as u32, &items);
        let bytes = [sequence, huge].concat();
        let err = check(&bytes, Encoding::ExplicitLittle, true).unwrap_err();
        assert!(err.to_string().starts_with("element (0009,1001)"), "{err}");
    }

    /// Found by the `part10` and `decode` fuzz targets: a bare implicit VR data set whose
    /// (0000,0000) UL has length 1. dicom-parser reads no number from it and takes the byte
    /// for the next tag; the walk skipped it, lost step with the parser, and let it reserve
    /// the 4 GiB an element it never saw claimed.
    #[test]
    fn the_walk_reads_binary_numbers_as_the_parser_does() {
        let bytes = include_bytes!("../../../../tests/data/fuzz/implicit-ul-of-length-1.dcm");
        let err = check(bytes, Encoding::ImplicitLittle, true).unwrap_err();
        assert!(err.to_string().starts_with("element (FFFF,0000)"), "{err}");
        // The same in explicit VR: a US of length 3 ends one byte into the next tag.
        let huge = el(0x0009, 0x1001, b"OB", 0xFFFF_FFF0, &[0; 16]);
        let mut bytes = el(0x0028, 0x0010, b"US", 3, &[0x40, 0x00, 0x09]);
        bytes.extend_from_slice(&huge[1..]);
        let err = check(&bytes, Encoding::ExplicitLittle, true).unwrap_err();
        assert!(err.to_string().starts_with("element (0009,1001)"), "{err}");
    }

    /// Found by the `part10` fuzz target: (7F00,0010) OB of undefined length, walked as
    /// fragments, read by dicom-parser as a sequence whose item claimed 900 MB.
    #[test]
    fn an_undefined_length_value_other_than_pixel_data_is_walked_as_a_sequence() {
        let claim = el(0x0009, 0x1001, b"OB", 0xFFFF_FFF0, &[]);
        let items = [item(ITEM, claim.len() as u32, &claim), vec![0; 16]].concat();
        let bytes = el(0x7F00, 0x0010, b"OB", UNDEFINED, &items);
        let err = check(&bytes, Encoding::ExplicitLittle, false).unwrap_err();
        assert!(err.to_string().starts_with("element (0009,1001)"), "{err}");
    }

    /// Found by the `part10` fuzz target: an item delimiter among Pixel Data's fragments
    /// stopped the walk, and dicom-parser, taking it for the end of the fragments, read the
    /// elements after it and reserved 3.3 GB for one.
    #[test]
    fn the_parser_is_given_nothing_past_where_the_walk_lost_the_structure() {
        let modality = el(0x0008, 0x0060, b"CS", 2, b"CT");
        let fragments = [item(ITEM, 0, &[]), item(ITEM, 4, b"abcd")].concat();
        let stray = item(ITEM_END, 0, &[]);
        let huge = el(0x0009, 0x1001, b"OB", 0xFFFF_FFF0, &[0; 16]);
        let pixels = el(0x7FE0, 0x0010, b"OB", UNDEFINED, &fragments);
        let bytes = [modality.clone(), pixels.clone(), stray, huge].concat();
        let walked = check_dataset(
            &mut Cursor::new(&bytes[..]),
            Encoding::ExplicitLittle,
            bytes.len() as u64,
            false,
        )
        .unwrap();
        let lost = (modality.len() + pixels.len()) as u64;
        assert_eq!(walked.lost_at, Some(lost));
        assert_eq!(walked.parser_end(bytes.len() as u64), lost);
        // A stream that merely ends early is the parser's to report, not lost.
        let cut = &bytes[..modality.len() + pixels.len() - 6];
        let walked = check_dataset(
            &mut Cursor::new(cut),
            Encoding::ExplicitLittle,
            cut.len() as u64,
            false,
        )
        .unwrap();
        assert_eq!(walked.lost_at, None);
    }

    #[test]
    fn a_value_longer_than_its_item_is_refused_even_if_the_stream_is_long() {
        let inner = el(0x0008, 0x1150, b"UT", 1000, &[]);
        let items = item(ITEM, inner.len() as u32, &inner);
        let mut bytes = el(0x0008, 0x1115, b"SQ", items.len() as u32, &items);
        bytes.extend_from_slice(&[0; 2000]);
        let err = check(&bytes, Encoding::ExplicitLittle, false).unwrap_err();
        assert!(err.to_string().starts_with("element (0008,1150)"), "{err}");
    }

    #[test]
    fn a_fragment_longer_than_the_stream_is_refused_when_decoding_only() {
        let pixels = [item(ITEM, 0, &[]), item(ITEM, 1 << 30, &[1, 2, 3])].concat();
        let bytes = el(0x7FE0, 0x0010, b"OB", UNDEFINED, &pixels);
        check(&bytes, Encoding::ExplicitLittle, true).unwrap();
        let err = check(&bytes, Encoding::ExplicitLittle, false).unwrap_err();
        assert!(err.to_string().starts_with("element (FFFE,E000)"), "{err}");
    }

    fn pixel_data(bytes: &[u8]) -> Option<PixelData> {
        let total = bytes.len() as u64;
        let walked = check_dataset(
            &mut Cursor::new(bytes),
            Encoding::ExplicitLittle,
            total,
            false,
        );
        walked.unwrap().pixel_data
    }

    #[test]
    fn the_walk_says_what_the_image_pixel_data_looks_like() {
        let modality = el(0x0008, 0x0060, b"CS", 2, b"CT");
        let native = [modality.clone(), el(0x7FE0, 0x0010, b"OW", 8, &[0; 8])].concat();
        assert_eq!(pixel_data(&native), Some(PixelData::Native { len: 8 }));
        assert_eq!(
            pixel_data(&well_formed()),
            Some(PixelData::Encapsulated {
                items: 2,
                delimited: true
            })
        );
        // Fragments that stop where the stream does, without their delimiter.
        let open = [
            el(0x7FE0, 0x0010, b"OB", UNDEFINED, &[]),
            item(ITEM, 0, &[]),
            item(ITEM, 4, &[1, 2, 3, 4]),
        ]
        .concat();
        assert_eq!(
            pixel_data(&open),
            Some(PixelData::Encapsulated {
                items: 2,
                delimited: false
            })
        );
        assert_eq!(pixel_data(&modality), Some(PixelData::Absent));
        let cut = [modality.clone(), vec![0xE0, 0x7F, 0x10]].concat();
        assert_eq!(pixel_data(&cut), Some(PixelData::Cut { at: 10 }));
        // A header scan stops before Pixel Data and says nothing of it.
        let scanned = check_dataset(
            &mut Cursor::new(&native[..]),
            Encoding::ExplicitLittle,
            native.len() as u64,
            true,
        );
        assert_eq!(scanned.unwrap().pixel_data, None);
    }

    #[test]
    fn implicit_sequences_are_known_from_the_dictionary() {
        // (0008,1115) Referenced Series Sequence, implicit VR: an item whose element
        // claims more than the sequence holds.
        let mut inner = [0x08u8, 0x00, 0x50, 0x11].to_vec();
        inner.extend_from_slice(&500u32.to_le_bytes());
        let items = item(ITEM, inner.len() as u32, &inner);
        let mut bytes = [0x08u8, 0x00, 0x15, 0x11].to_vec();
        bytes.extend_from_slice(&(items.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&items);
        bytes.extend_from_slice(&[0; 600]);
        let err = check(&bytes, Encoding::ImplicitLittle, false).unwrap_err();
        assert!(err.to_string().starts_with("element (0008,1150)"), "{err}");
    }

    #[test]
    fn hostile_nesting_is_refused_not_recursed_into() {
        let mut bytes = Vec::new();
        for _ in 0..200 {
            bytes.extend(el(0x0008, 0x1115, b"SQ", UNDEFINED, &[]));
            bytes.extend(item(ITEM, UNDEFINED, &[]));
        }
        let err = check(&bytes, Encoding::ExplicitLittle, false).unwrap_err();
        assert!(matches!(err, LengthError::TooDeep { .. }), "{err}");
    }

    #[test]
    fn big_endian_lengths_are_read_big_endian() {
        let mut bytes = vec![0x00, 0x08, 0x00, 0x60, b'C', b'S', 0x00, 0x02, b'C', b'T'];
        check(&bytes, Encoding::ExplicitBig, false).unwrap();
        bytes[6..8].copy_from_slice(&[0x02, 0x00]);
        assert!(check(&bytes, Encoding::ExplicitBig, false).is_err());
    }

    #[test]
    fn the_meta_group_gives_the_syntax_and_where_the_data_set_starts() {
        let bytes = [
            el(0x0002, 0x0000, b"UL", 4, &32u32.to_le_bytes()),
            el(0x0002, 0x0010, b"UI", 20, b"1.2.840.10008.1.2.1\0"),
            el(0x0008, 0x0060, b"CS", 2, b"CT"),
        ]
        .concat();
        let meta = check_meta(&mut Cursor::new(&bytes[..]), bytes.len() as u64).unwrap();
        assert_eq!(
            meta.transfer_syntax_uid.as_deref(),
            Some("1.2.840.10008.1.2.1\0")
        );
        assert_eq!(meta.dataset_at, Some(40));
        assert_eq!(
            Encoding::of_syntax("1.2.840.10008.1.2\0"),
            Some(Encoding::ImplicitLittle)
        );
    }

    #[test]
    fn a_syntax_uid_is_trimmed_as_the_registry_trims_it() {
        use dicom_transfer_syntax_registry::TransferSyntaxIndex;
        for uid in [
            "1.2.840.10008.1.2\t\0\0",
            "1.2.840.10008.1.2 \r\n",
            "1.2.840.10008.1.2",
        ] {
            let registry = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(uid)
                .map(|ts| ts.uid());
            assert_eq!(registry, Some("1.2.840.10008.1.2"), "{uid:?}");
            assert_eq!(
                Encoding::of_syntax(uid),
                Some(Encoding::ImplicitLittle),
                "{uid:?}"
            );
        }
    }
}
