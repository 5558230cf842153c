//! Server-side dashboard sessions: a random session id (the cookie's value, 256 bits) mapped
//! to the key that signed in (by its id and secret hash, never its text), a CSRF token, and
//! the idle and absolute deadlines. Kept in memory: a restart signs everyone out.

use base64::Engine;
use evident_core::Hash;
use evident_core::event::Millis;
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Most sessions held at once; signing in past it drops the expired ones, then the oldest.
pub const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The key that signed in.
    pub key_id: String,
    /// SHA-256 of the key text: the store finds the key (and sees a revocation) by it.
    pub secret_hash: Hash,
    /// Sent back by the page in `X-CSRF-Token` on every state-changing request.
    pub csrf_token: String,
    pub created_at: Millis,
    pub last_seen_at: Millis,
}

/// Why a session cookie does not sign a request in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("dashboard session unknown (signed out, or the server restarted): sign in again")]
    Unknown,
    #[error("dashboard session idle for too long: sign in again")]
    Idle,
    #[error("dashboard session reached its absolute lifetime: sign in again")]
    Expired,
    #[error("cannot draw randomness from the operating system")]
    Random,
}

/// The sessions and their timeouts.
#[derive(Debug)]
pub struct Sessions {
    idle_ms: Millis,
    absolute_ms: Millis,
    by_id: Mutex<HashMap<String, Session>>,
}

fn random_token() -> Result<String, SessionError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| SessionError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

impl Sessions {
    pub fn new(idle_ms: Millis, absolute_ms: Millis) -> Sessions {
        Sessions {
            idle_ms,
            absolute_ms,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// The absolute lifetime, in milliseconds (the cookie's Max-Age).
    pub fn absolute_ms(&self) -> Millis {
        self.absolute_ms
    }

    /// The idle timeout, in milliseconds.
    pub fn idle_ms(&self) -> Millis {
        self.idle_ms
    }

    fn live(&self, session: &Session, now: Millis) -> Result<(), SessionError> {
        if now.saturating_sub(session.created_at) >= self.absolute_ms {
            return Err(SessionError::Expired);
        }
        if now.saturating_sub(session.last_seen_at) >= self.idle_ms {
            return Err(SessionError::Idle);
        }
        Ok(())
    }

    /// Opens a session for the key; returns its id (the cookie value) and the session.
    pub fn open(
        &self,
        key_id: &str,
        secret_hash: Hash,
        now: Millis,
    ) -> Result<(String, Session), SessionError> {
        let id = random_token()?;
        let session = Session {
            key_id: key_id.to_owned(),
            secret_hash,
            csrf_token: random_token()?,
            created_at: now,
            last_seen_at: now,
        };
        let mut map = self.by_id.lock().map_err(|_| SessionError::Unknown)?;
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| self.live(s, now).is_ok());
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen_at)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session `id`, its idle deadline moved on; a dead one is removed.
    pub fn touch(&self, id: &str, now: Millis) -> Result<Session, SessionError> {
        let mut map = self.by_id.lock().map_err(|_| SessionError::Unknown)?;
        let session = map.get_mut(id).ok_or(SessionError::Unknown)?;
        if let Err(e) = self.live(session, now) {
            map.remove(id);
            return Err(e);
        }
        session.last_seen_at = now;
        Ok(session.clone())
    }

    /// Ends session `id`; returns it if it existed.
    pub fn close(&self, id: &str) -> Option<Session> {
        self.by_id.lock().ok()?.remove(id)
    }
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.csrf_token.as_bytes())))
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (n, v) = part.trim().split_once('=')?;
        (n == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_at_their_absolute_lifetime() {
        let sessions = Sessions::new(100, 1000);
        let (id, s) = sessions.open("evk_1", Hash::digest(b"k"), 0).unwrap();
        assert_eq!(s.key_id, "evk_1");
        assert_eq!(sessions.touch(&id, 99).unwrap().last_seen_at, 99);
        assert_eq!(sessions.touch(&id, 198).unwrap().last_seen_at, 198);
        assert_eq!(sessions.touch(&id, 298), Err(SessionError::Idle));
        assert_eq!(sessions.touch(&id, 299), Err(SessionError::Unknown));

        let (id, _) = sessions.open("evk_1", Hash::digest(b"k"), 0).unwrap();
        for t in (90..1000).step_by(90) {
            sessions.touch(&id, t).unwrap();
        }
        assert_eq!(sessions.touch(&id, 1000), Err(SessionError::Expired));

        let (id, s) = sessions.open("evk_2", Hash::digest(b"k"), 0).unwrap();
        assert!(s.csrf_matches(Some(&s.csrf_token)));
        assert!(!s.csrf_matches(None) && !s.csrf_matches(Some("x")));
        assert_eq!(
            sessions.close(&id).map(|s| s.key_id),
            Some("evk_2".to_owned())
        );
        assert_eq!(sessions.touch(&id, 1), Err(SessionError::Unknown));
    }

    #[test]
    fn ids_and_tokens_are_random_and_cookies_parse() {
        let sessions = Sessions::new(100, 1000);
        let (a, sa) = sessions.open("k", Hash::digest(b"k"), 0).unwrap();
        let (b, sb) = sessions.open("k", Hash::digest(b"k"), 0).unwrap();
        assert_ne!(a, b);
        assert_ne!(sa.csrf_token, sb.csrf_token);
        assert_eq!(a.len(), 43);
        assert_eq!(
            cookie_value("x=1; evident_session=abc; y=2", "evident_session"),
            Some("abc")
        );
        assert_eq!(
            cookie_value("evident_sessionx=abc", "evident_session"),
            None
        );
    }
}
