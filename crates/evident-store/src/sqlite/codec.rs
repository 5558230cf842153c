//! How one log entry maps onto an `events` row and back: the column list, the value encodings
//! (UUID and IP as fixed-size blobs, severity as its rank) and the decoder that turns a row
//! read from disk into a [`SealedEntry`], reporting anything undecodable as corruption at that
//! row's sequence number. Knows nothing of SQL beyond one row.

use crate::StoreError;
use evident_core::event::{
    Actor, ActorKind, Context, Event, Outcome, Severity, Target, validate_action,
    validate_appended_by, validate_node_id, validate_tenant,
};
use evident_core::{Hash, SealedEntry};
use rusqlite::Row;
use rusqlite::types::ValueRef;
use std::net::{IpAddr, Ipv6Addr};
use uuid::Uuid;

/// The `events` columns in the order [`decode`] reads them and the insert binds them.
pub(super) const EVENT_COLUMNS: &str = "seq, id, recorded_at, occurred_at, node_id, tenant, \
     actor_id, actor_kind, ip, user_agent, action, target_kind, target_id, outcome, severity, \
     context, hash, seal, appended_by";

/// The stored form of an IP address: 16 bytes, IPv4 as its IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`), so that one byte-ordered column holds both families and a CIDR block of
/// either family is one contiguous range. Lossless because events hold IPv4 in canonical form
/// (an `::ffff:a.b.c.d` input becomes the IPv4 address); [`encode_ip`] refuses the other form.
pub(super) type IpBytes = [u8; 16];

pub(super) fn encode_ip(ip: IpAddr) -> Option<IpBytes> {
    match ip {
        IpAddr::V4(v4) => Some(v4.to_ipv6_mapped().octets()),
        // The mapped form of an IPv4 address would read back as IPv4: not representable.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => None,
        IpAddr::V6(v6) => Some(v6.octets()),
    }
}

pub(super) fn decode_ip(bytes: IpBytes) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}

/// Severity as its rank, least severe 0, so that "at least" is `>=`.
pub(super) fn severity_rank(severity: Severity) -> i64 {
    Severity::ALL
        .iter()
        .position(|s| *s == severity)
        .map_or(0, |i| i as i64)
}

fn severity_from_rank(rank: i64) -> Option<Severity> {
    usize::try_from(rank)
        .ok()
        .and_then(|i| Severity::ALL.get(i).copied())
}

/// Decodes one row selected as [`EVENT_COLUMNS`]. Every failure is [`StoreError::Corrupt`]
/// naming the sequence number (when even that is unreadable, none).
pub(super) fn decode(row: &Row<'_>) -> Result<SealedEntry, StoreError> {
    let seq = match row.get_ref(0).map(|v| v.as_i64()) {
        Ok(Ok(seq)) if seq >= 0 => seq as u64,
        _ => {
            return Err(StoreError::Corrupt {
                seq: None,
                problem: "a row of the events table has no valid sequence number".to_owned(),
            });
        }
    };
    let cols = Columns { row, seq };
    let event = Event {
        seq,
        id: Uuid::from_bytes(cols.fixed::<16>(1, "id")?),
        recorded_at: cols.int(2, "recorded_at")?,
        occurred_at: cols.opt_int(3, "occurred_at")?,
        node_id: cols.checked(4, "node_id", validate_node_id)?,
        tenant: cols.checked(5, "tenant", validate_tenant)?,
        actor: Actor {
            id: cols.text(6, "actor_id")?.to_owned(),
            kind: cols.named(7, "actor_kind", ActorKind::from_name)?,
            ip: cols.opt_fixed::<16>(8, "ip")?.map(decode_ip),
            user_agent: cols.opt_text(9, "user_agent")?.map(str::to_owned),
        },
        action: cols.checked(10, "action", validate_action)?,
        target: Target {
            kind: cols.text(11, "target_kind")?.to_owned(),
            id: cols.text(12, "target_id")?.to_owned(),
        },
        outcome: cols.named(13, "outcome", Outcome::from_name)?,
        severity: severity_from_rank(cols.int(14, "severity")?)
            .ok_or_else(|| cols.corrupt("severity", "is not a severity rank (0 to 7)"))?,
        context: Context::from_canonical(cols.text(15, "context")?.to_owned())
            .map_err(|e| cols.corrupt("context", &e.problem))?,
        // NULL: an entry of encoding version 1, stored before the column existed.
        appended_by: cols.opt_checked(18, "appended_by", validate_appended_by)?,
    };
    Ok(SealedEntry {
        event,
        hash: Hash(cols.fixed::<32>(16, "hash")?),
        seal: Hash(cols.fixed::<32>(17, "seal")?),
    })
}

/// Typed access to the columns of one row, errors naming the row and column.
struct Columns<'a, 'r> {
    row: &'a Row<'r>,
    seq: u64,
}

impl Columns<'_, '_> {
    fn corrupt(&self, column: &str, problem: &str) -> StoreError {
        StoreError::Corrupt {
            seq: Some(self.seq),
            problem: format!("column {column} {problem}"),
        }
    }

    fn value(&self, idx: usize, column: &str) -> Result<ValueRef<'_>, StoreError> {
        self.row
            .get_ref(idx)
            .map_err(|e| self.corrupt(column, &format!("cannot be read: {e}")))
    }

    fn int(&self, idx: usize, column: &str) -> Result<i64, StoreError> {
        match self.value(idx, column)? {
            ValueRef::Integer(v) => Ok(v),
            _ => Err(self.corrupt(column, "is not an integer")),
        }
    }

    fn opt_int(&self, idx: usize, column: &str) -> Result<Option<i64>, StoreError> {
        match self.value(idx, column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(v) => Ok(Some(v)),
            _ => Err(self.corrupt(column, "is neither an integer nor NULL")),
        }
    }

    fn opt_text(&self, idx: usize, column: &str) -> Result<Option<&str>, StoreError> {
        match self.value(idx, column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| self.corrupt(column, "is not valid UTF-8")),
            _ => Err(self.corrupt(column, "is neither text nor NULL")),
        }
    }

    fn text(&self, idx: usize, column: &str) -> Result<&str, StoreError> {
        self.opt_text(idx, column)?
            .ok_or_else(|| self.corrupt(column, "is NULL"))
    }

    /// Text that must pass one of the core's validators (names and actions have a syntax).
    fn checked(
        &self,
        idx: usize,
        column: &str,
        validate: fn(&str) -> Result<(), evident_core::event::ValidationError>,
    ) -> Result<String, StoreError> {
        self.opt_checked(idx, column, validate)?
            .ok_or_else(|| self.corrupt(column, "is NULL"))
    }

    /// Like [`Self::checked`], NULL allowed.
    fn opt_checked(
        &self,
        idx: usize,
        column: &str,
        validate: fn(&str) -> Result<(), evident_core::event::ValidationError>,
    ) -> Result<Option<String>, StoreError> {
        let Some(text) = self.opt_text(idx, column)? else {
            return Ok(None);
        };
        validate(text).map_err(|e| self.corrupt(column, &e.problem))?;
        Ok(Some(text.to_owned()))
    }

    fn named<T>(
        &self,
        idx: usize,
        column: &str,
        from_name: fn(&str) -> Option<T>,
    ) -> Result<T, StoreError> {
        let text = self.text(idx, column)?;
        from_name(text).ok_or_else(|| self.corrupt(column, "holds an unknown name"))
    }

    fn opt_fixed<const N: usize>(
        &self,
        idx: usize,
        column: &str,
    ) -> Result<Option<[u8; N]>, StoreError> {
        match self.value(idx, column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(bytes) => <[u8; N]>::try_from(bytes)
                .map(Some)
                .map_err(|_| self.corrupt(column, &format!("is not a {N}-byte blob"))),
            _ => Err(self.corrupt(column, "is neither a blob nor NULL")),
        }
    }

    fn fixed<const N: usize>(&self, idx: usize, column: &str) -> Result<[u8; N], StoreError> {
        self.opt_fixed::<N>(idx, column)?
            .ok_or_else(|| self.corrupt(column, "is NULL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ip_encoding_round_trips_both_families_and_refuses_the_mapped_form() {
        let v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        let bytes = encode_ip(v4).unwrap();
        assert_eq!(&bytes[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(decode_ip(bytes), v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(decode_ip(encode_ip(v6).unwrap()), v6);
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(encode_ip(mapped), None);
    }

    #[test]
    fn severity_ranks_follow_severity_order() {
        for (i, s) in Severity::ALL.iter().enumerate() {
            assert_eq!(severity_rank(*s), i as i64);
            assert_eq!(severity_from_rank(i as i64), Some(*s));
        }
        assert_eq!(severity_from_rank(8), None);
        assert_eq!(severity_from_rank(-1), None);
    }
}
