//! Attributes stored with value representation UN that the standard dictionary knows.
//!
//! Some archives and older toolkits rewrite every attribute they do not know, or every
//! attribute, as UN (Unknown) in explicit VR files. PS3.5 section 6.2.2 lets a reader that
//! knows the attribute decode it with its real VR; the value is then encoded as in implicit VR
//! little endian whatever the transfer syntax. pydicom does the same by default.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::header::Header;
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;

/// Re-reads every top-level UN attribute whose tag the standard dictionary gives one VR
/// (strings, and binary numbers of whole size) with that VR. Returns how many were changed.
pub fn resolve_unknown_vrs(obj: &mut InMemDicomObject) -> usize {
    let known: Vec<(Tag, VR, PrimitiveValue)> = obj
        .iter()
        .filter(|e| e.vr() == VR::UN)
        .filter_map(|e| {
            let vr = match StandardDataDictionary.by_tag(e.tag())?.vr() {
                VirtualVr::Exact(vr) => vr,
                _ => return None,
            };
            let bytes = e.value().to_bytes().ok()?;
            Some((e.tag(), vr, reinterpret(vr, &bytes)?))
        })
        .collect();
    let count = known.len();
    for (tag, vr, value) in known {
        obj.put(DataElement::new(tag, vr, value));
    }
    count
}

/// `bytes` (little endian) as a value of `vr`, or `None` for VRs this does not re-read
/// (sequences, OB/OW and the like) or a length that is not a whole number of values.
fn reinterpret(vr: VR, bytes: &[u8]) -> Option<PrimitiveValue> {
    fn numbers<const N: usize, T>(bytes: &[u8], read: fn([u8; N]) -> T) -> Option<C<T>> {
        (bytes.len() % N == 0).then(|| {
            bytes
                .chunks_exact(N)
                .map(|c| read(c.try_into().expect("chunks are N bytes")))
                .collect()
        })
    }
    let value = match vr {
        VR::AE
        | VR::AS
        | VR::CS
        | VR::DA
        | VR::DS
        | VR::DT
        | VR::IS
        | VR::LO
        | VR::LT
        | VR::PN
        | VR::SH
        | VR::ST
        | VR::TM
        | VR::UC
        | VR::UI
        | VR::UR
        | VR::UT => {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim_end_matches(['\0', ' ']);
            let values: C<String> = if matches!(vr, VR::LT | VR::ST | VR::UT | VR::UR) {
                std::iter::once(text.to_owned()).collect()
            } else {
                text.split('\\').map(str::to_owned).collect()
            };
            PrimitiveValue::Strs(values)
        }
        VR::US => PrimitiveValue::U16(numbers(bytes, u16::from_le_bytes)?),
        VR::SS => PrimitiveValue::I16(numbers(bytes, i16::from_le_bytes)?),
        VR::UL => PrimitiveValue::U32(numbers(bytes, u32::from_le_bytes)?),
        VR::SL => PrimitiveValue::I32(numbers(bytes, i32::from_le_bytes)?),
        VR::FL => PrimitiveValue::F32(numbers(bytes, f32::from_le_bytes)?),
        VR::FD => PrimitiveValue::F64(numbers(bytes, f64::from_le_bytes)?),
        _ => return None,
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;

    fn un(tag: Tag, bytes: &[u8]) -> DataElement<InMemDicomObject> {
        DataElement::new(
            tag,
            VR::UN,
            PrimitiveValue::U8(bytes.iter().copied().collect()),
        )
    }

    #[test]
    fn known_attributes_stored_as_un_get_their_dictionary_vr() {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(un(tags::MODALITY, b"CT"));
        obj.put(un(tags::IMAGE_ORIENTATION_PATIENT, b"1\\0\\0\\0\\1\\0 "));
        obj.put(un(tags::ROWS, &512u16.to_le_bytes()));
        obj.put(un(tags::RESCALE_INTERCEPT, b"-1024 "));
        // Odd bytes for a US value, and a private tag: left as they are.
        obj.put(un(tags::COLUMNS, &[1, 2, 3]));
        obj.put(un(Tag(0x0009, 0x1001), b"secret"));
        assert_eq!(resolve_unknown_vrs(&mut obj), 4);
        let get = |tag| obj.element(tag).unwrap();
        assert_eq!(get(tags::MODALITY).vr(), VR::CS);
        assert_eq!(get(tags::MODALITY).to_str().unwrap(), "CT");
        let iop = get(tags::IMAGE_ORIENTATION_PATIENT)
            .to_multi_float64()
            .unwrap();
        assert_eq!(iop, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(get(tags::ROWS).to_int::<u32>().unwrap(), 512);
        assert_eq!(get(tags::RESCALE_INTERCEPT).to_float64().unwrap(), -1024.0);
        assert_eq!(get(tags::COLUMNS).vr(), VR::UN);
        assert_eq!(get(Tag(0x0009, 0x1001)).vr(), VR::UN);
    }
}
