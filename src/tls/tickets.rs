//! Session tickets sealed with keys from a file (`tls.ticket_keys`), so that
//! several instances with the same file resume each other's sessions. A ticket
//! is the first 4 bytes of the key's SHA-256 (which key), a random 12-byte nonce,
//! and the session state sealed with AES-256-GCM. The first key seals; every key
//! listed opens, so a rotation adds a new first line and keeps the old ones a while.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long a client may keep a ticket (seconds), as rustls's own ticketer.
const LIFETIME_SECS: u32 = 6 * 60 * 60;

/// Bytes naming the key a ticket was sealed with.
const KEY_ID_LEN: usize = 4;

/// Tickets sealed with the keys of a `ticket_keys` file.
pub struct FileTicketer {
    /// (id, key), the sealing one first.
    keys: Vec<([u8; KEY_ID_LEN], LessSafeKey)>,
    random: SystemRandom,
}

impl std::fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTicketer").field("keys", &self.keys.len()).finish()
    }
}

impl FileTicketer {
    /// A ticketer over `keys`, the sealing one first; `None` without keys.
    pub fn new(keys: &[[u8; 32]]) -> Option<Self> {
        let keys: Vec<_> = keys
            .iter()
            .filter_map(|key| {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
                let mut id = [0u8; KEY_ID_LEN];
                id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
                Some((id, LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?)))
            })
            .collect();
        (!keys.is_empty()).then(|| FileTicketer { keys, random: SystemRandom::new() })
    }
}

impl ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (id, key) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id), &mut sealed).ok()?;
        let mut ticket = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(id);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (id, rest) = ticket.split_at_checked(KEY_ID_LEN)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let (_, key) = self.keys.iter().find(|(known, _)| known == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut opened = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(id), &mut opened).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_with_any_listed_key_and_not_with_others() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let before = FileTicketer::new(&[old]).unwrap();
        let ticket = before.encrypt(b"session state").unwrap();
        assert_eq!(before.decrypt(&ticket).unwrap(), b"session state");
        // Rotated: new first, old still listed: old tickets still open.
        let rotated = FileTicketer::new(&[new, old]).unwrap();
        assert_eq!(rotated.decrypt(&ticket).unwrap(), b"session state");
        let fresh = rotated.encrypt(b"later").unwrap();
        assert_eq!(&fresh[..KEY_ID_LEN], &rotated.keys[0].0, "sealed with the first key");
        // Old key dropped: its tickets no longer open; tampering never opens.
        let dropped = FileTicketer::new(&[new]).unwrap();
        assert!(dropped.decrypt(&ticket).is_none());
        let mut tampered = fresh.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(rotated.decrypt(&tampered).is_none());
        assert!(rotated.decrypt(&fresh[..10]).is_none());
    }
}
