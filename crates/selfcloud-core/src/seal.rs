//! Authenticated encryption for data at rest: XChaCha20-Poly1305 with random 192-bit nonces.
//!
//! Sealed format: `0x01 || nonce (24 bytes) || ciphertext || tag (16 bytes)`. The leading version
//! byte lets a later format coexist. The associated data binds a ciphertext to where it is stored
//! (table and key), so a value moved to another key fails to open.
//!
//! XChaCha20-Poly1305 is the standard extended-nonce construction (draft-irtf-cfrg-xchacha-03
//! §2.3): HChaCha20 of the key and the nonce's first 16 bytes gives a subkey, and ChaCha20-Poly1305
//! (RFC 8439) runs under it with the nonce `0^4 || nonce[16..24]`. The two parts come from audited
//! libraries: HChaCha20 from RustCrypto's `chacha20`; ChaCha20-Poly1305 from `ring` for values
//! under [`LARGE`] and from the system's OpenSSL 3 for larger ones. Every IPFS block an instance
//! stores passes through here, so this is most of what `add` spends beside SHA-256; one core
//! sealing 256 KiB blocks on this host (AVX-512): OpenSSL 3,565 MiB/s, `ring` (AVX2 only)
//! 1,170-1,430, RustCrypto's `chacha20poly1305` 720-790. OpenSSL costs more per call (~3 µs, a
//! context and an algorithm fetch) and 1-2 ms to set up in each process, which a woken instance's
//! first small request must not wait for: so small values stay with `ring`. Both give byte for
//! byte what `chacha20poly1305::XChaCha20Poly1305` gives, which the tests check, so stores sealed
//! before open the same.

use chacha20::cipher::consts::U10;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Values at least this long are sealed and opened by OpenSSL, shorter ones by `ring`.
const LARGE: usize = 16 << 10;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;
/// Where the plaintext lies in a sealed value (after the version byte and the nonce).
pub const PLAINTEXT_AT: usize = 1 + NONCE_LEN;

/// A 256-bit symmetric key, wiped from memory on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A ciphertext that failed to open: wrong key, wrong place, or tampered.
#[derive(Debug, thiserror::Error)]
#[error("sealed data failed to open (wrong key, moved, or tampered)")]
pub struct OpenError;

impl Key {
    /// A fresh random key.
    pub fn generate() -> Key {
        Key(crate::random_bytes::<32>())
    }
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }
    /// A key from a slice that must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Key> {
        Some(Key(bytes.try_into().ok()?))
    }
    /// The raw bytes (for wrapping under another key only).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypt `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        // In place, in the output: one copy of the plaintext (blocks are 256 KiB and more).
        let mut sealed = Vec::with_capacity(OVERHEAD + plaintext.len());
        sealed.resize(PLAINTEXT_AT, 0);
        sealed.extend_from_slice(plaintext);
        sealed.resize(OVERHEAD + plaintext.len(), 0);
        self.seal_in_place(aad, &mut sealed);
        sealed
    }

    /// Seal where it lies: `sealed` is [`OVERHEAD`] bytes longer than the plaintext, which
    /// lies at [`PLAINTEXT_AT`]; the header and the tag are filled in around it, making what
    /// [`Key::seal`] returns. (The block writer copies a block into an aligned buffer on one
    /// thread and seals it there on another.)
    pub fn seal_in_place(&self, aad: &[u8], sealed: &mut [u8]) {
        assert!(sealed.len() >= OVERHEAD, "a sealed value has room for its header and tag");
        let nonce_bytes = crate::random_bytes::<NONCE_LEN>();
        sealed[0] = VERSION;
        sealed[1..PLAINTEXT_AT].copy_from_slice(&nonce_bytes);
        let body_len = sealed.len() - OVERHEAD;
        let (body, tag_room) = sealed[PLAINTEXT_AT..].split_at_mut(body_len);
        // With a valid key and nonce, only a failed allocation inside the library could stop this.
        let tag_room: &mut [u8; 16] = tag_room.try_into().expect("the last 16 bytes hold the tag");
        self.xchacha(&nonce_bytes, Direction::Seal, aad, body, tag_room).expect("ChaCha20-Poly1305 seal");
    }

    /// Decrypt what [`Key::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Err(OpenError);
        }
        let nonce_bytes: &[u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().map_err(|_| OpenError)?;
        let (body, tag) = sealed[1 + NONCE_LEN..].split_at(sealed.len() - OVERHEAD);
        let mut tag: [u8; 16] = tag.try_into().map_err(|_| OpenError)?;
        // One copy of the ciphertext, decrypted where it lies.
        let mut plain = body.to_vec();
        self.xchacha(nonce_bytes, Direction::Open, aad, &mut plain, &mut tag).map_err(|_| OpenError)?;
        Ok(plain)
    }

    /// XChaCha20-Poly1305 in place over `data`: HChaCha20 gives the subkey that ChaCha20-Poly1305
    /// runs under. Sealing writes the tag into `tag`; opening checks it and fails on a mismatch
    /// (and `data` is then garbage, which callers drop).
    fn xchacha(&self, nonce: &[u8; NONCE_LEN], direction: Direction, aad: &[u8], data: &mut [u8], tag: &mut [u8; 16]) -> Result<(), CipherError> {
        let (subkey, short) = self.chacha_key(nonce);
        let backend: Backend = if data.len() >= LARGE { with_openssl } else { with_ring };
        backend(&subkey, &short, direction, aad, data, tag)
    }

    /// The ChaCha20-Poly1305 key and nonce that XChaCha20-Poly1305 runs under for `nonce`.
    fn chacha_key(&self, nonce: &[u8; NONCE_LEN]) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
        let (prefix, suffix) = nonce.split_at(16);
        let mut subkey = Zeroizing::new([0u8; 32]);
        let mut derived = chacha20::hchacha::<U10>((&self.0).into(), prefix.into());
        subkey.copy_from_slice(&derived);
        derived.zeroize();
        let mut short = [0u8; 12];
        short[4..].copy_from_slice(suffix);
        (subkey, short)
    }
}

/// Sealing failed (only an allocation inside the library could), or a tag did not match.
#[derive(Debug)]
struct CipherError;

/// ChaCha20-Poly1305 in place by one library: (subkey, nonce, direction, aad, data, tag).
type Backend = fn(&[u8; 32], &[u8; 12], Direction, &[u8], &mut [u8], &mut [u8; 16]) -> Result<(), CipherError>;

fn with_ring(subkey: &[u8; 32], nonce: &[u8; 12], direction: Direction, aad: &[u8], data: &mut [u8], tag: &mut [u8; 16]) -> Result<(), CipherError> {
    let cipher = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, subkey).map_err(|_| CipherError)?);
    let nonce = Nonce::assume_unique_for_key(*nonce);
    match direction {
        Direction::Seal => {
            let sealed = cipher.seal_in_place_separate_tag(nonce, Aad::from(aad), data).map_err(|_| CipherError)?;
            tag.copy_from_slice(sealed.as_ref());
        }
        Direction::Open => {
            cipher.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), data, 0..).map_err(|_| CipherError)?;
        }
    }
    Ok(())
}

fn with_openssl(subkey: &[u8; 32], nonce: &[u8; 12], direction: Direction, aad: &[u8], data: &mut [u8], tag: &mut [u8; 16]) -> Result<(), CipherError> {
    openssl_crypt(subkey, nonce, direction, aad, data, tag).map_err(|_| CipherError)
}

fn openssl_crypt(subkey: &[u8; 32], short: &[u8; 12], direction: Direction, aad: &[u8], data: &mut [u8], tag: &mut [u8; 16]) -> Result<(), openssl::error::ErrorStack> {
    let mut ctx = CipherCtx::new()?;
    let cipher = Cipher::chacha20_poly1305();
    match direction {
        Direction::Seal => ctx.encrypt_init(Some(cipher), Some(subkey), Some(short))?,
        Direction::Open => {
            ctx.decrypt_init(Some(cipher), Some(subkey), Some(short))?;
            ctx.set_tag(tag)?;
        }
    }
    ctx.cipher_update(aad, None)?;
    // OpenSSL takes lengths as C ints: feed large values in pieces (the stream continues).
    for piece in data.chunks_mut(1 << 30) {
        let len = piece.len();
        ctx.cipher_update_inplace(piece, len)?;
    }
    // A stream cipher: nothing is left to write at the end, where the tag is computed or checked.
    ctx.cipher_final(&mut [])?;
    if direction == Direction::Seal {
        ctx.tag(tag)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Seal,
    Open,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn seal_open_and_tamper() {
        let key = Key::generate();
        let sealed = key.seal(b"kv/app/x", b"hello");
        assert_eq!(key.open(b"kv/app/x", &sealed).unwrap(), b"hello");
        assert!(key.open(b"kv/app/y", &sealed).is_err(), "moved value must not open");
        assert!(Key::generate().open(b"kv/app/x", &sealed).is_err(), "foreign key must not open");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(key.open(b"kv/app/x", &bad).is_err());
        assert!(key.open(b"", &[]).is_err());
        assert!(key.open(b"", &[VERSION; OVERHEAD - 1]).is_err());
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        assert_eq!(key.open(b"a", &key.seal(b"a", &big)).unwrap(), big);
        assert_eq!(key.open(b"a", &key.seal(b"a", b"")).unwrap(), b"");
        let mut short_tag = key.seal(b"a", b"xyz");
        short_tag.pop();
        assert!(key.open(b"a", &short_tag).is_err());
    }

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap()).collect()
    }

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1: the published XChaCha20-Poly1305 vector.
    #[test]
    fn xchacha_matches_the_draft_vector() {
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let key = Key::from_slice(&hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")).unwrap();
        let nonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657");
        let expected = hex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
             21f9664c97637da9768812f615c68b13b52e
             c0875924c1c7987947deafd8780acf49",
        );
        let mut sealed = vec![VERSION];
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&expected);
        assert_eq!(key.open(&aad, &sealed).unwrap(), plaintext);
        // And sealing produces those bytes: the same cipher under the same nonce.
        let nonce: [u8; NONCE_LEN] = nonce.as_slice().try_into().unwrap();
        // By both libraries, whatever the length would choose.
        let (subkey, short) = key.chacha_key(&nonce);
        for (name, backend) in [("ring", with_ring as Backend), ("OpenSSL", with_openssl)] {
            let mut body = plaintext.to_vec();
            let mut tag = [0u8; 16];
            backend(&subkey, &short, Direction::Seal, &aad, &mut body, &mut tag).unwrap();
            body.extend_from_slice(&tag);
            assert_eq!(body, expected, "sealed by {name}");
            let (mut ciphertext, mut tag) = (expected[..plaintext.len()].to_vec(), <[u8; 16]>::try_from(&expected[plaintext.len()..]).unwrap());
            backend(&subkey, &short, Direction::Open, &aad, &mut ciphertext, &mut tag).unwrap();
            assert_eq!(ciphertext, plaintext, "opened by {name}");
            tag[0] ^= 1;
            let mut ciphertext = expected[..plaintext.len()].to_vec();
            assert!(backend(&subkey, &short, Direction::Open, &aad, &mut ciphertext, &mut tag).is_err(), "a wrong tag must not open by {name}");
        }
    }

    /// Values sealed by RustCrypto's XChaCha20-Poly1305 (every store written before ring, and then
    /// OpenSSL, did the work) open here, and what is sealed here opens there.
    #[test]
    fn interchangeable_with_rustcrypto() {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let key = Key::generate();
        let theirs = chacha20poly1305::XChaCha20Poly1305::new(key.as_bytes().into());
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 1000, LARGE - 1, LARGE, 262_144] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let nonce = crate::random_bytes::<NONCE_LEN>();
            let mut body = plain.clone();
            let tag = theirs.encrypt_in_place_detached(chacha20poly1305::XNonce::from_slice(&nonce), b"blocks/x", &mut body).unwrap();
            let mut sealed = vec![VERSION];
            sealed.extend_from_slice(&nonce);
            sealed.extend_from_slice(&body);
            sealed.extend_from_slice(&tag);
            assert_eq!(key.open(b"blocks/x", &sealed).unwrap(), plain, "length {len}");

            let ours = key.seal(b"blocks/x", &plain);
            let (nonce, rest) = ours[1..].split_at(NONCE_LEN);
            let (body, tag) = rest.split_at(rest.len() - 16);
            let mut body = body.to_vec();
            theirs.decrypt_in_place_detached(chacha20poly1305::XNonce::from_slice(nonce), b"blocks/x", &mut body, chacha20poly1305::Tag::from_slice(tag)).unwrap();
            assert_eq!(body, plain, "length {len}");
        }
    }
}
