//! py2p's four compressions (`py2p/messages.py`'s `compress`/`decompress`), each decompressor
//! reading through `Read::take(max + 1)` so that a body inflating past the limit is refused
//! after at most `max + 1` bytes of output: a compression bomb costs its limit, never more.

use std::io::{Read, Write};

/// Memory the xz decoder may use (liblzma's memlimit): 16 MiB. py2p compresses with xz
/// preset 6 (8 MiB dictionary, about 9 MiB to decode); a header asking for more is refused
/// before the dictionary is allocated.
pub const P2PT_XZ_MEMORY_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// xz preset py2p uses (`lzma.compress`'s default, `PRESET_DEFAULT`); check CRC64.
pub const P2PT_XZ_PRESET: u32 = 6;
/// zlib/gzip level py2p uses (`Z_DEFAULT_COMPRESSION`).
pub const P2PT_DEFLATE_LEVEL: u32 = 6;
/// bz2 level py2p uses (`bz2.compress`'s default).
pub const P2PT_BZ2_LEVEL: u32 = 9;
/// The first two bytes of a gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The gzip header's OS byte CPython's zlib writes on Unix.
const GZIP_OS_UNIX: u8 = 3;

/// A compression method, by py2p's code (`py2p/flags.py`). snappy (0x20) is left out: py2p
/// offers it only when python-snappy is installed, and it is not built here (SPEC.md §25.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// `flags.bz2`: a bzip2 stream (concatenated streams accepted, as Python's `bz2`).
    Bz2,
    /// `flags.gzip`: a gzip member.
    Gzip,
    /// `flags.lzma`: an .xz stream (Python's `lzma.compress` default container).
    Xz,
    /// `flags.zlib`: a zlib stream.
    Zlib,
}

impl Method {
    /// py2p's preference order (`py2p.messages.compression` without snappy); also what a py2p
    /// node advertises in its handshake.
    pub const PREFERENCE: [Method; 4] = [Method::Zlib, Method::Gzip, Method::Bz2, Method::Xz];

    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Method::Bz2 => 0x10,
            Method::Gzip => 0x11,
            Method::Xz => 0x12,
            Method::Zlib => 0x13,
        }
    }

    /// The format `data` inflated with this method actually had: zlib and gzip read each
    /// other's streams (py2p's `MAX_WBITS | 32`), told apart by gzip's magic `1f 8b`.
    pub fn detected(self, data: &[u8]) -> Method {
        match self {
            Method::Zlib | Method::Gzip if data.starts_with(&GZIP_MAGIC) => Method::Gzip,
            Method::Zlib | Method::Gzip => Method::Zlib,
            other => other,
        }
    }

    /// The method with this code, if weft has it.
    pub fn from_code(code: u64) -> Option<Method> {
        Some(match code {
            0x10 => Method::Bz2,
            0x11 => Method::Gzip,
            0x12 => Method::Xz,
            0x13 => Method::Zlib,
            _ => return None,
        })
    }
}

/// py2p's snappy code, recognised but not supported.
pub const SNAPPY_CODE: u8 = 0x20;

/// Compresses `data` as py2p does: zlib and gzip at level 6 (gzip with mtime 0 and OS byte 3),
/// bz2 at level 9, xz at preset 6 with CRC64.
pub fn compress(method: Method, data: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(data.len() / 2 + 64);
    // Writing into a Vec<u8> cannot fail; the encoders add no error of their own for valid
    // settings (the levels and presets above are in range).
    match method {
        Method::Zlib => {
            let mut e =
                flate2::write::ZlibEncoder::new(out, flate2::Compression::new(P2PT_DEFLATE_LEVEL));
            e.write_all(data).expect("writing into a Vec cannot fail");
            e.finish().expect("writing into a Vec cannot fail")
        }
        Method::Gzip => {
            let mut e = flate2::GzBuilder::new()
                .operating_system(GZIP_OS_UNIX)
                .write(out, flate2::Compression::new(P2PT_DEFLATE_LEVEL));
            e.write_all(data).expect("writing into a Vec cannot fail");
            e.finish().expect("writing into a Vec cannot fail")
        }
        Method::Bz2 => {
            let mut e = bzip2::write::BzEncoder::new(out, bzip2::Compression::new(P2PT_BZ2_LEVEL));
            e.write_all(data).expect("writing into a Vec cannot fail");
            e.finish().expect("writing into a Vec cannot fail")
        }
        Method::Xz => {
            let stream = liblzma::stream::Stream::new_easy_encoder(
                P2PT_XZ_PRESET,
                liblzma::stream::Check::Crc64,
            )
            .expect("preset 6 with CRC64 is a valid xz encoder setting");
            let mut e = liblzma::write::XzEncoder::new_stream(out, stream);
            e.write_all(data).expect("writing into a Vec cannot fail");
            e.finish().expect("writing into a Vec cannot fail")
        }
    }
}

/// Why one method could not inflate a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inflate {
    /// Not a valid stream of this method: a receiver tries the next method, then the raw bytes.
    Corrupt,
    /// The output passed `max` bytes: the frame is refused.
    TooLarge,
}

/// Inflates `data` with `method`, reading at most `max + 1` bytes of output.
///
/// As py2p (`zlib.decompress(msg, MAX_WBITS | 32)`), [`Method::Zlib`] and [`Method::Gzip`]
/// both accept either header, told apart by the gzip magic `1f 8b`; bytes after the end of a
/// zlib or gzip stream are ignored, as there. bz2 and xz accept concatenated streams (xz also
/// the legacy .lzma container, as Python's `FORMAT_AUTO`).
pub fn decompress(method: Method, data: &[u8], max: usize) -> Result<Vec<u8>, Inflate> {
    let limit = max as u64 + 1;
    let mut out = Vec::new();
    let read = match method {
        Method::Zlib | Method::Gzip if data.starts_with(&GZIP_MAGIC) => {
            flate2::read::GzDecoder::new(data)
                .take(limit)
                .read_to_end(&mut out)
        }
        Method::Zlib | Method::Gzip => flate2::read::ZlibDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out),
        Method::Bz2 => bzip2::read::MultiBzDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out),
        Method::Xz => {
            let Ok(stream) = liblzma::stream::Stream::new_auto_decoder(
                P2PT_XZ_MEMORY_BYTES_MAX,
                liblzma::stream::CONCATENATED,
            ) else {
                return Err(Inflate::Corrupt);
            };
            liblzma::read::XzDecoder::new_stream(data, stream)
                .take(limit)
                .read_to_end(&mut out)
        }
    };
    match read {
        Ok(_) if out.len() > max => Err(Inflate::TooLarge),
        Ok(_) => Ok(out),
        Err(_) => Err(Inflate::Corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips() {
        let data = b"weft speaks p2p.today ".repeat(50);
        for m in Method::PREFERENCE {
            let packed = compress(m, &data);
            assert!(packed.len() < data.len(), "{m:?} shrinks a repetitive text");
            assert_eq!(
                decompress(m, &packed, data.len()),
                Ok(data.clone()),
                "{m:?}"
            );
            assert_eq!(Method::from_code(u64::from(m.code())), Some(m));
        }
    }

    #[test]
    fn zlib_and_gzip_read_each_other_as_py2p_does() {
        let data = b"either header".to_vec();
        let gz = compress(Method::Gzip, &data);
        let zl = compress(Method::Zlib, &data);
        assert_eq!(decompress(Method::Zlib, &gz, 100), Ok(data.clone()));
        assert_eq!(decompress(Method::Gzip, &zl, 100), Ok(data));
    }

    #[test]
    fn output_one_past_the_limit_is_too_large_and_at_the_limit_is_fine() {
        let data = vec![0u8; 10_000];
        for m in Method::PREFERENCE {
            let packed = compress(m, &data);
            assert_eq!(
                decompress(m, &packed, 9_999),
                Err(Inflate::TooLarge),
                "{m:?}"
            );
            assert_eq!(decompress(m, &packed, 10_000).map(|v| v.len()), Ok(10_000));
        }
    }

    #[test]
    fn garbage_and_truncated_streams_are_corrupt() {
        let packed_len_half = |m| {
            let p = compress(m, &b"some text to squeeze, some text to squeeze".repeat(20));
            p[..p.len() / 2].to_vec()
        };
        for m in Method::PREFERENCE {
            assert_eq!(
                decompress(m, b"not compressed at all", 1000),
                Err(Inflate::Corrupt)
            );
            assert_eq!(
                decompress(m, &packed_len_half(m), 100_000),
                Err(Inflate::Corrupt),
                "{m:?}"
            );
        }
    }

    #[test]
    fn xz_header_asking_for_too_much_memory_is_refused() {
        // preset 9 wants a 64 MiB dictionary: over P2PT_XZ_MEMORY_BYTES_MAX.
        let stream =
            liblzma::stream::Stream::new_easy_encoder(9, liblzma::stream::Check::Crc64).unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(b"tiny").unwrap();
        let packed = e.finish().unwrap();
        assert_eq!(decompress(Method::Xz, &packed, 1000), Err(Inflate::Corrupt));
    }
}
