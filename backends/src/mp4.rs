//! Just enough ISO base media (MP4) to write a simulated shot that is a real container with a
//! declared duration, and to read that duration back in technical QA.
//!
//! A file is a sequence of boxes: a 32-bit big-endian size, a four-character type, a body.
//! `moov/mvhd` holds the movie's timescale and duration.

use std::time::Duration;

/// Builds a small MP4: `ftyp`, `moov` with an `mvhd` of the given duration, and an `mdat` with
/// `payload` (a stand-in for the video data).
pub fn write_minimal(duration: Duration, payload: &[u8]) -> Vec<u8> {
    let timescale: u32 = 1000;
    let units = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
    let mut ftyp = Vec::new();
    ftyp.extend_from_slice(b"isom");
    ftyp.extend_from_slice(&0x200u32.to_be_bytes());
    ftyp.extend_from_slice(b"isomiso2avc1mp41");

    let mut mvhd = vec![0u8; 4]; // version 0, flags 0
    mvhd.extend_from_slice(&0u32.to_be_bytes()); // creation time
    mvhd.extend_from_slice(&0u32.to_be_bytes()); // modification time
    mvhd.extend_from_slice(&timescale.to_be_bytes());
    mvhd.extend_from_slice(&units.to_be_bytes());
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    mvhd.extend_from_slice(&[0u8; 10]); // reserved
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        mvhd.extend_from_slice(&v.to_be_bytes()); // unity matrix
    }
    mvhd.extend_from_slice(&[0u8; 24]); // pre-defined
    mvhd.extend_from_slice(&2u32.to_be_bytes()); // next track id

    let moov = boxed(b"mvhd", &mvhd);
    let mut out = boxed(b"ftyp", &ftyp);
    out.extend(boxed(b"moov", &moov));
    out.extend(boxed(b"mdat", payload));
    out
}

/// Reads the movie duration from `moov/mvhd`, or `None` when the bytes hold no readable one.
pub fn read_duration(bytes: &[u8]) -> Option<Duration> {
    let moov = find_box(bytes, b"moov")?;
    let mvhd = find_box(moov, b"mvhd")?;
    let version = *mvhd.first()?;
    let (timescale, units) = if version == 1 {
        (be_u32(mvhd, 20)?, be_u64(mvhd, 24)?)
    } else {
        (be_u32(mvhd, 12)?, u64::from(be_u32(mvhd, 16)?))
    };
    if timescale == 0 {
        return None;
    }
    Some(Duration::from_secs_f64(units as f64 / f64::from(timescale)))
}

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(body.len() + 8).expect("simulated boxes are small");
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn find_box<'a>(mut bytes: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    while bytes.len() >= 8 {
        let size = be_u32(bytes, 0)? as usize;
        if size < 8 || size > bytes.len() {
            return None;
        }
        if &bytes[4..8] == kind {
            return Some(&bytes[8..size]);
        }
        bytes = &bytes[size..];
    }
    None
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_round_trips() {
        let bytes = write_minimal(Duration::from_millis(4500), b"frames");
        assert_eq!(read_duration(&bytes), Some(Duration::from_millis(4500)));
        assert_eq!(&bytes[4..8], b"ftyp");
    }

    #[test]
    fn garbage_has_no_duration() {
        assert_eq!(read_duration(b"not an mp4 at all"), None);
        assert_eq!(read_duration(&[]), None);
    }
}
