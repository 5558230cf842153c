//! How one log entry maps onto a PostgreSQL `evident.events` row and back: the column list,
//! the value encodings (IP as 16 bytes, severity as its rank; the same encodings as the
//! embedded store) and the decoder that turns a row into a [`SealedEntry`], reporting anything
//! undecodable as corruption at that row's sequence number. Knows nothing of SQL beyond one
//! row.

use crate::StoreError;
use evident_core::event::{
    Actor, ActorKind, Context, Event, Outcome, Severity, Target, validate_action,
    validate_appended_by, validate_node_id, validate_tenant,
};
use evident_core::{Hash, SealedEntry};
use postgres::Row;
use postgres::types::FromSql;
use std::net::{IpAddr, Ipv6Addr};
use uuid::Uuid;

/// The `events` columns in the order [`decode`] reads them and COPY writes them.
pub(super) const EVENT_COLUMNS: &str = "seq, id, recorded_at, occurred_at, node_id, tenant, \
     actor_id, actor_kind, ip, user_agent, action, target_kind, target_id, outcome, severity, \
     context, hash, seal, appended_by";

/// IPv4 as its IPv4-mapped IPv6 address, so that one byte-ordered column holds both families
/// and a CIDR block of either is one range. `None` for the mapped form itself (it reads back
/// as IPv4: events hold IPv4 in canonical form).
pub(super) fn encode_ip(ip: IpAddr) -> Option<[u8; 16]> {
    match ip {
        IpAddr::V4(v4) => Some(v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => None,
        IpAddr::V6(v6) => Some(v6.octets()),
    }
}

fn decode_ip(bytes: [u8; 16]) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}

/// Severity as its rank, least severe 0, so that "at least" is `>=`.
pub(super) fn severity_rank(severity: Severity) -> i16 {
    Severity::ALL
        .iter()
        .position(|s| *s == severity)
        .and_then(|i| i16::try_from(i).ok())
        .unwrap_or(0)
}

fn severity_from_rank(rank: i16) -> Option<Severity> {
    usize::try_from(rank)
        .ok()
        .and_then(|i| Severity::ALL.get(i).copied())
}

/// Decodes one row selected as [`EVENT_COLUMNS`]. Every failure is [`StoreError::Corrupt`]
/// naming the sequence number (when even that is unreadable, none).
pub(super) fn decode(row: &Row) -> Result<SealedEntry, StoreError> {
    let seq = match row.try_get::<_, i64>(0) {
        Ok(seq) if seq >= 0 => seq.unsigned_abs(),
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
        id: cols.get::<Uuid>(1, "id")?,
        recorded_at: cols.get(2, "recorded_at")?,
        occurred_at: cols.get(3, "occurred_at")?,
        node_id: cols.checked(4, "node_id", validate_node_id)?,
        tenant: cols.checked(5, "tenant", validate_tenant)?,
        actor: Actor {
            id: cols.get(6, "actor_id")?,
            kind: cols.named(7, "actor_kind", ActorKind::from_name)?,
            ip: cols.opt_fixed::<16>(8, "ip")?.map(decode_ip),
            user_agent: cols.get(9, "user_agent")?,
        },
        action: cols.checked(10, "action", validate_action)?,
        target: Target {
            kind: cols.get(11, "target_kind")?,
            id: cols.get(12, "target_id")?,
        },
        outcome: cols.named(13, "outcome", Outcome::from_name)?,
        severity: severity_from_rank(cols.get(14, "severity")?)
            .ok_or_else(|| cols.corrupt("severity", "is not a severity rank (0 to 7)"))?,
        context: Context::from_canonical(cols.get(15, "context")?)
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
struct Columns<'a> {
    row: &'a Row,
    seq: u64,
}

impl Columns<'_> {
    fn corrupt(&self, column: &str, problem: &str) -> StoreError {
        StoreError::Corrupt {
            seq: Some(self.seq),
            problem: format!("column {column} {problem}"),
        }
    }

    fn get<'r, T: FromSql<'r>>(&'r self, idx: usize, column: &str) -> Result<T, StoreError> {
        self.row
            .try_get(idx)
            .map_err(|e| self.corrupt(column, &format!("cannot be read: {e}")))
    }

    /// Text that must pass one of the core's validators (names and actions have a syntax).
    fn checked(
        &self,
        idx: usize,
        column: &str,
        validate: fn(&str) -> Result<(), evident_core::event::ValidationError>,
    ) -> Result<String, StoreError> {
        let text: String = self.get(idx, column)?;
        validate(&text).map_err(|e| self.corrupt(column, &e.problem))?;
        Ok(text)
    }

    /// Like [`Self::checked`], NULL allowed.
    fn opt_checked(
        &self,
        idx: usize,
        column: &str,
        validate: fn(&str) -> Result<(), evident_core::event::ValidationError>,
    ) -> Result<Option<String>, StoreError> {
        let text: Option<String> = self.get(idx, column)?;
        if let Some(text) = &text {
            validate(text).map_err(|e| self.corrupt(column, &e.problem))?;
        }
        Ok(text)
    }

    fn named<T>(
        &self,
        idx: usize,
        column: &str,
        from_name: fn(&str) -> Option<T>,
    ) -> Result<T, StoreError> {
        let text: &str = self.get(idx, column)?;
        from_name(text).ok_or_else(|| self.corrupt(column, "holds an unknown name"))
    }

    fn opt_fixed<const N: usize>(
        &self,
        idx: usize,
        column: &str,
    ) -> Result<Option<[u8; N]>, StoreError> {
        let bytes: Option<&[u8]> = self.get(idx, column)?;
        bytes
            .map(|b| {
                <[u8; N]>::try_from(b)
                    .map_err(|_| self.corrupt(column, &format!("is not {N} bytes long")))
            })
            .transpose()
    }

    fn fixed<const N: usize>(&self, idx: usize, column: &str) -> Result<[u8; N], StoreError> {
        self.opt_fixed::<N>(idx, column)?
            .ok_or_else(|| self.corrupt(column, "is NULL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_ranks_follow_severity_order() {
        for (i, s) in Severity::ALL.iter().enumerate() {
            assert_eq!(severity_rank(*s), i as i16);
            assert_eq!(severity_from_rank(i as i16), Some(*s));
        }
        assert_eq!(severity_from_rank(8), None);
    }
}
