//! Reading other states' reports: who may see what (owner scopes), query filters over
//! the indexes, sync from a sequence number, and what each read returned (for the audit).
//!
//! Give-to-get standing is checked by the caller with [`crate::policy`] before these
//! run; here every result is also checked against its owner's sharing scope, so no path
//! returns a record outside its scope.

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::hmac;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    country::CountryCode,
    pb,
    report::{Category, parse_date},
    store::{
        AuditRecord, EnvelopeKind, EnvelopeRecord, OwnerReads, ReportHead, Snapshot, Store,
        StoreError,
    },
};

/// Most results of one query call.
pub const MAX_QUERY_RESULTS: u32 = 10_000;
/// Report ids kept per owner in one audit record.
const MAX_AUDITED_IDS: usize = 1_000;

/// Whether `reader` may see the report as a record, by its latest version's scope.
pub fn visible_to(head: &ReportHead, reader: CountryCode) -> bool {
    if head.state == reader.as_str() {
        return true;
    }
    head.summary
        .as_ref()
        .is_some_and(|s| scope_admits(s.scope, &s.listed_states, reader))
}

/// Whether a sharing scope (with its listed states) lets `reader` see a record of
/// another state.
fn scope_admits(scope: i32, listed_states: &[String], reader: CountryCode) -> bool {
    match pb::SharingScope::try_from(scope) {
        Ok(pb::SharingScope::AllContributors) => true,
        Ok(pb::SharingScope::ListedStates) => listed_states.iter().any(|s| s == reader.as_str()),
        _ => false,
    }
}

/// Whether any version of the report may have been shown to `reader`: while a version
/// was the latest, its own scope was the report's.
fn ever_visible_to(head: &ReportHead, reader: CountryCode) -> bool {
    visible_to(head, reader)
        || head
            .versions
            .iter()
            .any(|v| v.scope != 0 && scope_admits(v.scope, &v.listed_states, reader))
}

/// Whether `reader` may see the report's latest envelope: a retraction wherever any
/// version may have been shown ([`ever_visible_to`]), a version by the latest scope.
fn latest_visible_to(head: &ReportHead, reader: CountryCode) -> bool {
    if head.retracted {
        ever_visible_to(head, reader)
    } else {
        visible_to(head, reader)
    }
}

/// Whether `reader` may see this envelope of the report: a version is shown only where
/// its own scope *and* the latest version's scope both allow it (an owner may narrow a
/// report, or widen it, without exposing what an earlier version was not shared for).
/// A retraction is shown wherever any version may have been, even one narrowed before
/// it was retracted, so that every state holding a copy learns it was withdrawn; once a
/// report is retracted, no version of it goes to another state any more (a state that
/// had it learns of the retraction, one that had not gets only the retraction).
fn envelope_visible_to(head: &ReportHead, record: &EnvelopeRecord, reader: CountryCode) -> bool {
    if head.state == reader.as_str() {
        return true;
    }
    if record.kind() != Some(EnvelopeKind::Report) {
        return ever_visible_to(head, reader);
    }
    if !visible_to(head, reader) || head.retracted {
        return false;
    }
    let own = head.versions.iter().find(|v| v.version == record.version);
    match own {
        Some(v) if v.scope != 0 => scope_admits(v.scope, &v.listed_states, reader),
        // Stored before versions kept their own scope: read it from the payload.
        _ => crate::report::summarize_stored(&record.envelope)
            .is_some_and(|s| scope_admits(s.scope, &s.listed_states, reader)),
    }
}

/// A bad query parameter.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FilterError {
    pub field: &'static str,
    pub reason: String,
}

/// What is wrong with a bounding box, if anything: the first edge out of range (NaN
/// included), or edges in the wrong order.
fn bbox_problem(b: &pb::BoundingBox) -> Option<String> {
    let edges = [
        ("min_latitude", b.min_latitude, 90.0),
        ("max_latitude", b.max_latitude, 90.0),
        ("min_longitude", b.min_longitude, 180.0),
        ("max_longitude", b.max_longitude, 180.0),
    ];
    for (name, value, limit) in edges {
        if !(-limit..=limit).contains(&value) {
            return Some(format!("{name} {value} is not in -{limit}..{limit}"));
        }
    }
    if b.min_latitude > b.max_latitude {
        return Some(format!(
            "min_latitude {} is north of max_latitude {}: give the southern edge first",
            b.min_latitude, b.max_latitude
        ));
    }
    if b.min_longitude > b.max_longitude {
        return Some(format!(
            "min_longitude {} is east of max_longitude {}: give the western edge first (a \
             box across the 180th meridian is two queries)",
            b.min_longitude, b.max_longitude
        ));
    }
    None
}

fn bad(field: &'static str, reason: impl Into<String>) -> FilterError {
    FilterError {
        field,
        // The reason may quote the bad value: keep the answer small.
        reason: crate::report::shorten(reason.into(), 200),
    }
}

/// Most entries of a filter list (there are 249 ISO 3166-1 countries).
const MAX_FILTER_LIST: usize = 300;

/// A checked query.
#[derive(Debug, Clone)]
pub struct QueryFilter {
    /// The category the query reads (one per query).
    pub category: Category,
    from_day: i32,
    to_day: i32,
    states: Vec<CountryCode>,
    /// Reports whose origin, a transit country or the destination is one of these.
    pub(crate) route_countries: Vec<String>,
    /// Reports with persons of one of these nationalities.
    pub(crate) nationalities: Vec<String>,
    /// `tidemark.v1.ModusOperandi`; 0 for any.
    pub(crate) modus_operandi: i32,
    /// `tidemark.v1.MaritimeEvent`; 0 for any.
    pub(crate) maritime_event: i32,
    /// `tidemark.v1.VesselType`; 0 for any.
    pub(crate) vessel_type: i32,
    /// Reports whose point lies inside.
    pub(crate) bbox: Option<pb::BoundingBox>,
    changed_since: i64,
    include_retracted: bool,
    limit: usize,
    /// Where to continue, with the seal it came with (see [`QueryFilter::seal`]).
    after: Option<(Cursor, Vec<u8>)>,
}

/// A position in a query's result order. A query's pages list, first, the reports that
/// have not changed since its first page was read — by (state or "", incident day,
/// report) — and then the reports changed or added since, in the order of their latest
/// change. An amendment moves a report in the first order (its day may change), so a
/// report changed while the pages are read is left out there and comes in the second
/// part: it is never missed, and appears twice only when an earlier page had already
/// sent its earlier version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// In the first part, after this report; `high`: the store's last sequence number
    /// when the first page was read.
    Index {
        state: String,
        day: i32,
        id: u128,
        high: u64,
    },
    /// In the second part, after the change with this sequence number.
    Changed { high: u64, sequence: u64 },
}

/// The first word of a cursor in the second part of a query's pages.
const CHANGED: &str = "changed";

/// Why an `after` is refused: altered, made up, or returned for another query.
const NOT_OURS: &str = "is not a cursor this server returned for this query: pass the last \
                        result's `cursor` unchanged, with the same filters, or start again \
                        without `after`";

impl Cursor {
    fn encode(&self) -> String {
        match self {
            Self::Index {
                state,
                day,
                id,
                high,
            } => format!("{state}/{day}/{}/{high}", Uuid::from_u128(*id).simple()),
            Self::Changed { high, sequence } => format!("{CHANGED}/{high}/{sequence}"),
        }
    }

    /// Reads a cursor exactly as [`Self::encode`] writes it, and nothing else.
    fn decode(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        let cursor = match parts[..] {
            [CHANGED, high, sequence] => Self::Changed {
                high: high.parse().ok()?,
                sequence: sequence.parse().ok()?,
            },
            [state, day, id, high] => {
                if !state.is_empty() && CountryCode::parse(state).is_err() {
                    return None;
                }
                Self::Index {
                    state: state.to_owned(),
                    day: day.parse().ok()?,
                    id: Uuid::try_parse(id).ok()?.as_u128(),
                    high: high.parse().ok()?,
                }
            }
            _ => return None,
        };
        (cursor.encode() == text).then_some(cursor)
    }
}

fn countries(field: &'static str, codes: &[String]) -> Result<Vec<CountryCode>, FilterError> {
    if codes.len() > MAX_FILTER_LIST {
        return Err(bad(
            field,
            format!("has {} entries; at most {MAX_FILTER_LIST}", codes.len()),
        ));
    }
    codes
        .iter()
        .map(|c| CountryCode::parse(c).map_err(|e| bad(field, e.to_string())))
        .collect()
}

impl QueryFilter {
    /// Checks a Query/Subscribe request's filter fields.
    pub fn from_request(req: &pb::QueryRequest) -> Result<Self, FilterError> {
        let category =
            Category::required(req.category).map_err(|reason| bad("category", reason))?;
        let day = |field: &'static str, text: &str, open: i32| -> Result<i32, FilterError> {
            if text.is_empty() {
                return Ok(open);
            }
            parse_date(text)
                .map(time::Date::to_julian_day)
                .ok_or_else(|| bad(field, crate::calendar::refusal(text, "a date YYYY-MM-DD")))
        };
        let from_day = day("from_date", &req.from_date, i32::MIN)?;
        let to_day = day("to_date", &req.to_date, i32::MAX)?;
        if from_day > to_day {
            return Err(bad("to_date", "is before from_date"));
        }
        let mut states = countries("reporting_states", &req.reporting_states)?;
        states.sort();
        states.dedup();
        // Sorted and each once, as the states: a set of countries is one filter however
        // it is listed (and a cursor continues it).
        let set = |field, codes: &[String]| -> Result<Vec<String>, FilterError> {
            let mut codes: Vec<String> = countries(field, codes)?
                .iter()
                .map(ToString::to_string)
                .collect();
            codes.sort();
            codes.dedup();
            Ok(codes)
        };
        let route_countries = set("route_countries", &req.route_countries)?;
        let nationalities = set("nationalities", &req.nationalities)?;
        if let Some(field) = crate::report::unknown_filter_enum(
            req.modus_operandi,
            req.maritime_event,
            req.vessel_type,
        ) {
            return Err(bad(field, "is not one of the values the enum defines"));
        }
        if let Some((field, theirs)) = crate::report::filters_of_one_category(
            req.modus_operandi,
            req.maritime_event,
            req.vessel_type,
        )
        .into_iter()
        .find(|(_, theirs)| *theirs != category)
        {
            return Err(bad(
                field,
                format!(
                    "applies to {} only, and this read is of {}: leave it out or ask for \
                     that category",
                    theirs.plural(),
                    category.plural()
                ),
            ));
        }
        if let Some(b) = &req.bbox {
            bbox_problem(b).map_or(Ok(()), |problem| Err(bad("bbox", problem)))?;
        }
        let limit = match req.limit {
            0 => MAX_QUERY_RESULTS,
            n => n.min(MAX_QUERY_RESULTS),
        };
        let after = if req.after.is_empty() {
            None
        } else {
            let sealed = req.after.rsplit_once('.').and_then(|(cursor, seal)| {
                let seal = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(seal)
                    .ok()?;
                Some((Cursor::decode(cursor)?, seal))
            });
            Some(sealed.ok_or_else(|| bad("after", NOT_OURS))?)
        };
        Ok(Self {
            category,
            from_day,
            to_day,
            states,
            route_countries,
            nationalities,
            modus_operandi: req.modus_operandi,
            maritime_event: req.maritime_event,
            vessel_type: req.vessel_type,
            // -0.0 is 0.0, and every time before 1970 is "any time": one filter each.
            bbox: req.bbox.map(|b| pb::BoundingBox {
                min_latitude: b.min_latitude + 0.0,
                min_longitude: b.min_longitude + 0.0,
                max_latitude: b.max_latitude + 0.0,
                max_longitude: b.max_longitude + 0.0,
            }),
            changed_since: req.changed_since_unix.max(0),
            include_retracted: req.include_retracted,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            after,
        })
    }

    /// What this query asks for, apart from where to continue and how many: the part of
    /// a cursor's seal that ties it to the query it was returned for.
    fn asks(&self) -> String {
        format!(
            "{:?}|{}|{}|{:?}|{:?}|{:?}|{}|{}|{}|{:?}|{}|{}",
            self.category,
            self.from_day,
            self.to_day,
            self.states,
            self.route_countries,
            self.nationalities,
            self.modus_operandi,
            self.maritime_event,
            self.vessel_type,
            self.bbox,
            self.changed_since,
            self.include_retracted
        )
    }

    /// `cursor` as a result carries it: its text, a `.`, and an HMAC-SHA256 under the
    /// store's cursor key of that text and of what the query asks for (base64url). A
    /// client cannot make one up, alter one, or take one to another query.
    fn seal(&self, cursor: &Cursor, key: &hmac::Key) -> String {
        let text = cursor.encode();
        let tag = hmac::sign(key, format!("{}\n{text}", self.asks()).as_bytes());
        format!(
            "{text}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// Checks that `after` was sealed by this server, under `key`, for this query.
    pub fn authenticate(&self, key: &hmac::Key) -> Result<(), FilterError> {
        let Some((cursor, tag)) = &self.after else {
            return Ok(());
        };
        let message = format!("{}\n{}", self.asks(), cursor.encode());
        hmac::verify(key, message.as_bytes(), tag).map_err(|_| bad("after", NOT_OURS))
    }

    /// This query continued after `cursor` (one this server sealed for it, as its
    /// results carry), with `sent` results sent: how a read that pauses for its caller
    /// resumes, on a snapshot of its own. `None` when nothing is left to send.
    pub(crate) fn continued(&self, cursor: &str, sent: usize) -> Option<Self> {
        let (cursor, seal) = cursor.rsplit_once('.')?;
        let seal = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seal)
            .ok()?;
        let limit = self.limit.checked_sub(sent).filter(|left| *left > 0)?;
        Some(Self {
            limit,
            after: Some((Cursor::decode(cursor)?, seal)),
            ..self.clone()
        })
    }

    /// The filter a subscription pushes with: retractions of matching reports included,
    /// whenever they changed.
    #[must_use]
    pub fn pushing(&self) -> Self {
        Self {
            include_retracted: true,
            changed_since: 0,
            ..self.clone()
        }
    }

    /// The incident days asked for, inclusive (open ends are `i32::MIN` / `i32::MAX`).
    pub fn days(&self) -> (i32, i32) {
        (self.from_day, self.to_day)
    }

    /// The reporting states asked for, sorted; empty for all.
    pub fn states(&self) -> &[CountryCode] {
        &self.states
    }

    /// Whether any filter besides category, dates and reporting states is set.
    pub fn narrows_by_content(&self) -> bool {
        !self.route_countries.is_empty()
            || !self.nationalities.is_empty()
            || self.modus_operandi != 0
            || self.maritime_event != 0
            || self.vessel_type != 0
            || self.bbox.is_some()
            || self.changed_since != 0
    }

    /// Whether the query only asks for the reader's own reports.
    pub fn only_own(&self, reader: CountryCode) -> bool {
        self.states == [reader]
    }

    /// Whether the report's latest version passes every filter.
    pub fn matches(&self, head: &ReportHead) -> bool {
        let Some(s) = &head.summary else { return false };
        if !(self.from_day..=self.to_day).contains(&s.incident_day) {
            return false;
        }
        if head.retracted && !self.include_retracted {
            return false;
        }
        if s.category != self.category.to_pb() as i32 || head.changed_at < self.changed_since {
            return false;
        }
        let any = |wanted: &[String], have: &[String]| {
            wanted.is_empty() || wanted.iter().any(|w| have.contains(w))
        };
        if !any(&self.route_countries, &s.route_countries)
            || !any(&self.nationalities, &s.nationalities)
        {
            return false;
        }
        let eq = |wanted: i32, have: i32| wanted == 0 || wanted == have;
        if !eq(self.modus_operandi, s.modus_operandi)
            || !eq(self.maritime_event, s.maritime_event)
            || !eq(self.vessel_type, s.vessel_type)
        {
            return false;
        }
        if let Some(b) = &self.bbox {
            let inside = s.has_point
                && (b.min_latitude..=b.max_latitude).contains(&s.latitude)
                && (b.min_longitude..=b.max_longitude).contains(&s.longitude);
            if !inside {
                return false;
            }
        }
        true
    }
}

/// One report a read returns.
#[derive(Clone)]
pub(crate) struct Hit {
    pub record: EnvelopeRecord,
    pub head: ReportHead,
    pub sequence: u64,
    /// For query results: where to continue after this one.
    pub cursor: Option<String>,
}

/// What a read of records is, as its audit record names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadKind {
    /// `query`, `sync` or `subscribe`.
    pub action: &'static str,
    /// The category it reads.
    pub category: Category,
}

impl ReadKind {
    /// The audit record of this read by `principal` of `state`, begun, nothing read yet.
    pub(crate) fn started(&self, principal: &str, state: &str, detail: &str) -> AuditRecord {
        self.record(principal, state, detail, Vec::new(), true)
    }

    /// The audit record of this read with `owners` read (their counts summed).
    fn record(
        &self,
        principal: &str,
        state: &str,
        detail: &str,
        owners: Vec<OwnerReads>,
        in_progress: bool,
    ) -> AuditRecord {
        AuditRecord {
            principal: principal.to_owned(),
            state: state.to_owned(),
            action: self.action.to_owned(),
            detail: detail.to_owned(),
            count: owners.iter().map(|o| o.count).sum(),
            owners,
            in_progress,
            category: self.category.label().to_owned(),
            ..AuditRecord::default()
        }
    }
}

/// What a read returned, by owner, for the audit log.
#[derive(Default)]
pub(crate) struct ReadLog {
    owners: BTreeMap<String, OwnerReads>,
    count: u64,
}

impl ReadLog {
    /// Notes one envelope read of `owner`'s report `id` (16 bytes; counted even when it
    /// is not known).
    pub(crate) fn note(&mut self, owner: &str, id: Option<&[u8; 16]>) {
        self.count += 1;
        let add = |entry: &mut OwnerReads| {
            entry.count += 1;
            if let Some(id) = id
                && entry.report_ids.len() < MAX_AUDITED_IDS
                && !entry.report_ids.iter().any(|i| i == id)
            {
                entry.report_ids.push(id.to_vec());
            }
        };
        // Looked up first: the owner is allocated once per read, not once per item.
        if let Some(entry) = self.owners.get_mut(owner) {
            add(entry);
        } else {
            let mut entry = OwnerReads {
                owner: owner.to_owned(),
                ..OwnerReads::default()
            };
            add(&mut entry);
            self.owners.insert(owner.to_owned(), entry);
        }
    }

    /// The audit record of what was read so far (marked complete; see
    /// [`AuditRecord::in_progress`]).
    pub(crate) fn to_audit(
        &self,
        principal: &str,
        state: &str,
        read: &ReadKind,
        detail: &str,
    ) -> AuditRecord {
        read.record(
            principal,
            state,
            detail,
            self.owners.values().cloned().collect(),
            false,
        )
    }
}

/// The smallest number of one owner's reports an audit record allows a read to send.
const MIN_ALLOWANCE: u64 = 64;

/// What a streaming read's audit record allows it to send of other states' reports
/// before the record must be raised. The record is raised — to twice what has been sent
/// — *before* a report past it is sent, so every report that leaves the server is on
/// record first: a read cut short (a crash) stays on record, in progress, with an upper
/// bound per owner; a read that ends is completed with exact counts. Raising costs
/// O(log n) audit writes per owner.
#[derive(Default)]
pub(crate) struct Allowance {
    sent: BTreeMap<String, u64>,
    allowed: BTreeMap<String, u64>,
}

impl Allowance {
    /// Counts `n` more reports of `owner` as about to be sent; `true` when the record
    /// must be raised (to [`Self::to_audit`]) before they are.
    pub(crate) fn take(&mut self, owner: &str, n: u64) -> bool {
        let sent = self.sent.entry(owner.to_owned()).or_default();
        *sent += n;
        let sent = *sent;
        let allowed = self.allowed.entry(owner.to_owned()).or_default();
        if sent <= *allowed {
            return false;
        }
        *allowed = sent.saturating_mul(2).max(MIN_ALLOWANCE);
        true
    }

    /// The in-progress audit record of a read with this allowance: per owner, the most
    /// it may have sent.
    pub(crate) fn to_audit(
        &self,
        principal: &str,
        state: &str,
        read: &ReadKind,
        detail: &str,
    ) -> AuditRecord {
        let owners = self
            .allowed
            .iter()
            .map(|(owner, count)| OwnerReads {
                owner: owner.clone(),
                count: *count,
                report_ids: Vec::new(),
            })
            .collect();
        read.record(principal, state, detail, owners, true)
    }
}

/// Runs a query for `reader`, handing each hit to `emit` until it returns false: the
/// page that follows `filter.after` (see [`Cursor`] for the order of pages). A hit that
/// `recheck` no longer allows is left out, and not counted towards the page's limit.
pub(crate) fn query(
    snapshot: &Snapshot,
    filter: &QueryFilter,
    (reader, recheck): (CountryCode, &mut Recheck),
    mut emit: impl FnMut(Hit) -> bool,
) -> Result<(), StoreError> {
    let (high, changed_after) = match &filter.after {
        None => (snapshot.last_sequence()?, None),
        Some((Cursor::Index { high, .. }, _)) => (*high, None),
        Some((Cursor::Changed { high, sequence }, _)) => (*high, Some(*sequence)),
    };
    let mut count = 0;
    let mut hand_on = |hit: Hit| -> Result<bool, StoreError> {
        if !recheck.allows(&hit, reader)? {
            return Ok(true);
        }
        count += 1;
        Ok(emit(hit) && count < filter.limit)
    };
    if changed_after.is_none() && !unchanged_since(snapshot, filter, reader, high, &mut hand_on)? {
        return Ok(());
    }
    changed_since(
        snapshot,
        filter,
        reader,
        (high, changed_after.unwrap_or(high)),
        &mut hand_on,
    )
}

/// The first part of a query's pages: the matching reports whose latest change is at or
/// before sequence `high`, in index order after the cursor. `false` when `send` asked to
/// stop, `true` when the part is done.
fn unchanged_since(
    snapshot: &Snapshot,
    filter: &QueryFilter,
    reader: CountryCode,
    high: u64,
    send: &mut impl FnMut(Hit) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let category = filter.category.to_pb() as i32;
    let after = match &filter.after {
        Some((Cursor::Index { state, day, id, .. }, _)) => Some((state.as_str(), *day, *id)),
        _ => None,
    };
    let mut consider = |state: &str, day: i32, id: u128| -> Result<bool, StoreError> {
        let Some(head) = snapshot.head(id)? else {
            return Ok(true);
        };
        let sequence = head.latest_sequence();
        if sequence > high || !latest_visible_to(&head, reader) || !filter.matches(&head) {
            return Ok(true);
        }
        let Some(record) = snapshot.envelope(sequence)? else {
            return Ok(true);
        };
        let cursor = Cursor::Index {
            state: state.to_owned(),
            day,
            id,
            high,
        };
        send(Hit {
            record,
            head,
            sequence,
            cursor: Some(filter.seal(&cursor, snapshot.cursor_key())),
        })
    };
    if filter.states.is_empty() {
        let start = after.map(|(_, day, id)| (day, id));
        for key in snapshot.by_date(category, filter.from_day, filter.to_day, start)? {
            let (_, day, id) = key?;
            if !consider("", day, id)? {
                return Ok(false);
            }
        }
    } else {
        for state in &filter.states {
            let start = match after {
                Some((after, ..)) if after > state.as_str() => continue,
                Some((after, day, id)) if after == state.as_str() => Some((day, id)),
                _ => None,
            };
            for key in snapshot.by_state(
                state.as_str(),
                category,
                filter.from_day,
                filter.to_day,
                start,
            )? {
                let (_, day, id) = key?;
                if !consider(state.as_str(), day, id)? {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// The second part of a query's pages: the matching reports whose latest change came
/// after sequence `high` (amended, retracted or added while the pages were read), each
/// at its latest change, in sequence order after `after`.
fn changed_since(
    snapshot: &Snapshot,
    filter: &QueryFilter,
    reader: CountryCode,
    (high, after): (u64, u64),
    send: &mut impl FnMut(Hit) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let wanted = |head: &ReportHead| {
        (filter.states.is_empty() || filter.states.iter().any(|s| s.as_str() == head.state))
            && filter.matches(head)
    };
    let mut failed = None;
    walk_log(
        snapshot,
        filter.category,
        after,
        reader,
        wanted,
        |mut hit| {
            // Each report once, at its latest change.
            if hit.head.latest_sequence() != hit.sequence {
                return true;
            }
            let cursor = Cursor::Changed {
                high,
                sequence: hit.sequence,
            };
            hit.cursor = Some(filter.seal(&cursor, snapshot.cursor_key()));
            send(hit).unwrap_or_else(|e| {
                failed = Some(e);
                false
            })
        },
    )?;
    failed.map_or(Ok(()), Err)
}

/// The store as it stands now, for a read of an older snapshot: a long read's items are
/// sent only while their report's scope, as it now stands, still allows them. An owner
/// who narrows a report's scope (or a reader's view of it) while another state's read is
/// running stops the rest of that read from sending it.
pub(crate) struct Recheck {
    store: Store,
    /// The latest committed sequence number.
    changes: watch::Receiver<u64>,
    /// The last sequence number the read's snapshot holds.
    read_at: u64,
}

impl Recheck {
    /// Rechecks a read of `snapshot` against `store` (whose commits `changes` announces).
    pub(crate) fn new(
        store: Store,
        changes: watch::Receiver<u64>,
        snapshot: &Snapshot,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            store,
            changes,
            read_at: snapshot.last_sequence()?,
        })
    }

    /// Rechecks items of sequence numbers after `read_at` (a subscription's pushes).
    pub(crate) fn after(store: Store, changes: watch::Receiver<u64>, read_at: u64) -> Self {
        Self {
            store,
            changes,
            read_at,
        }
    }

    /// Whether anything was committed since the read's snapshot. Each check then reads
    /// the store as it now stands in a read transaction of its own
    /// ([`Store::current_head`]): none is kept between items, which a slow reader may
    /// take minutes apart.
    fn changed(&self) -> bool {
        *self.changes.borrow() > self.read_at
    }

    /// Whether `hit` may still be sent to `reader`: one of its own reports always; another
    /// state's if nothing was committed since the read's snapshot, or if the report's
    /// scope as it now stands, and its version's own, allow it.
    pub(crate) fn allows(&mut self, hit: &Hit, reader: CountryCode) -> Result<bool, StoreError> {
        if hit.head.state == reader.as_str() || !self.changed() {
            return Ok(true);
        }
        let id = Uuid::from_slice(&hit.record.report_id)
            .map_err(|_| StoreError::Corrupt(format!("envelope {}: report id", hit.sequence)))?;
        let (head, _) = self.store.current_head(id.as_u128(), None)?;
        Ok(head.is_some_and(|head| envelope_visible_to(&head, &hit.record, reader)))
    }

    /// Checks an item again as it is handed to the transport, after it waited in the
    /// read's queue: whether it may still go to `reader` (as [`Self::allows`]), and its
    /// report's status as it now stands written into `meta` (a report amended or
    /// retracted meanwhile is not sent as live).
    pub(crate) fn still_allows(
        &mut self,
        meta: &mut pb::EnvelopeMeta,
        reader: CountryCode,
    ) -> Result<bool, StoreError> {
        if !self.changed() {
            return Ok(true);
        }
        let Ok(id) = Uuid::parse_str(&meta.report_id) else {
            return Ok(false);
        };
        let (head, record) = self.store.current_head(id.as_u128(), Some(meta.sequence))?;
        let Some(head) = head else {
            return Ok(false);
        };
        if head.state != reader.as_str() {
            let Some(record) = record else {
                return Ok(false);
            };
            if !envelope_visible_to(&head, &record, reader) {
                return Ok(false);
            }
        }
        meta.status = status(&head) as i32;
        Ok(true)
    }
}

/// Every envelope of `category` visible to `reader` after sequence `after`, in order.
pub(crate) fn sync(
    snapshot: &Snapshot,
    category: Category,
    after: u64,
    reader: CountryCode,
    emit: impl FnMut(Hit) -> bool,
) -> Result<(), StoreError> {
    walk_log(snapshot, category, after, reader, |_| true, emit)
}

/// Envelopes after sequence `after` whose report `reader` may see and that match the
/// filter (retractions of such reports included): what a subscription pushes next.
pub(crate) fn changes(
    snapshot: &Snapshot,
    filter: &QueryFilter,
    after: u64,
    reader: CountryCode,
    emit: impl FnMut(Hit) -> bool,
) -> Result<(), StoreError> {
    let pushing = filter.pushing();
    walk_log(
        snapshot,
        filter.category,
        after,
        reader,
        |head| pushing.matches(head),
        emit,
    )
}

/// Every envelope after sequence `after`, at most `limit`, each with its report's head:
/// one read that [`pushes`] then sorts for every subscription.
pub(crate) fn envelopes_after(
    snapshot: &Snapshot,
    after: u64,
    limit: usize,
) -> Result<Vec<Hit>, StoreError> {
    let mut hits = Vec::new();
    for entry in snapshot.envelopes_after(after)?.take(limit) {
        let (sequence, record) = entry?;
        let id = Uuid::from_slice(&record.report_id)
            .map_err(|_| StoreError::Corrupt(format!("envelope {sequence}: report id")))?;
        let Some(head) = snapshot.head(id.as_u128())? else {
            continue;
        };
        hits.push(Hit {
            record,
            head,
            sequence,
            cursor: None,
        });
    }
    Ok(hits)
}

/// Whether a subscription of `reader` with `pushing` (see [`QueryFilter::pushing`])
/// pushes this envelope: the same rule as [`changes`].
pub(crate) fn pushes(pushing: &QueryFilter, reader: CountryCode, hit: &Hit) -> bool {
    hit.record.category == pushing.category.to_pb() as i32
        && envelope_visible_to(&hit.head, &hit.record, reader)
        && pushing.matches(&hit.head)
}

/// Walks the envelope log after `after`, handing on each envelope of `category` whose
/// report `reader` may see and `keep` accepts.
fn walk_log(
    snapshot: &Snapshot,
    category: Category,
    after: u64,
    reader: CountryCode,
    keep: impl Fn(&ReportHead) -> bool,
    mut emit: impl FnMut(Hit) -> bool,
) -> Result<(), StoreError> {
    let category = category.to_pb() as i32;
    for entry in snapshot.envelopes_after(after)? {
        let (sequence, record) = entry?;
        if record.category != category {
            continue;
        }
        let id = Uuid::from_slice(&record.report_id)
            .map_err(|_| StoreError::Corrupt(format!("envelope {sequence}: report id")))?;
        let Some(head) = snapshot.head(id.as_u128())? else {
            continue;
        };
        if !envelope_visible_to(&head, &record, reader) || !keep(&head) {
            continue;
        }
        if !emit(Hit {
            record,
            head,
            sequence,
            cursor: None,
        }) {
            break;
        }
    }
    Ok(())
}

/// A report's status as its head stands.
fn status(head: &ReportHead) -> pb::ReportStatus {
    if head.retracted {
        pb::ReportStatus::Retracted
    } else if head.latest_version() > 1 {
        pb::ReportStatus::Amended
    } else {
        pb::ReportStatus::Live
    }
}

/// Server metadata for an envelope.
pub(crate) fn meta(hit: &Hit) -> pb::EnvelopeMeta {
    let status = status(&hit.head);
    pb::EnvelopeMeta {
        sequence: hit.sequence,
        accepted_at_unix: hit.record.accepted_at,
        reporting_state: hit.record.state.clone(),
        report_id: Uuid::from_slice(&hit.record.report_id)
            .map(|u| u.to_string())
            .unwrap_or_default(),
        version: hit.record.version,
        category: hit.record.category,
        status: status as i32,
        kind: hit
            .record
            .kind()
            .map_or("report", EnvelopeKind::label)
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(
        min_latitude: f64,
        min_longitude: f64,
        max_latitude: f64,
        max_longitude: f64,
    ) -> pb::BoundingBox {
        pb::BoundingBox {
            min_latitude,
            min_longitude,
            max_latitude,
            max_longitude,
        }
    }

    /// A filter written another way — countries in another order or twice, -0.0 for
    /// 0.0, a time before 1970 — is the same query, whose cursors it continues.
    #[test]
    fn a_filter_written_another_way_is_the_same_query() {
        let ask = |routes: &[&str], nationalities: &[&str], edge: f64, since: i64| {
            QueryFilter::from_request(&pb::QueryRequest {
                category: pb::Category::SmugglingIncident as i32,
                route_countries: routes.iter().map(|&c| c.to_owned()).collect(),
                nationalities: nationalities.iter().map(|&c| c.to_owned()).collect(),
                bbox: Some(bbox(edge, 100.0, 5.0, 130.0)),
                changed_since_unix: since,
                ..pb::QueryRequest::default()
            })
            .unwrap()
            .asks()
        };
        let one = ask(&["AFG", "IRN"], &["LKA", "MMR"], 0.0, 0);
        assert_eq!(ask(&["IRN", "AFG", "AFG"], &["MMR", "LKA"], -0.0, -7), one);
        assert_ne!(ask(&["AFG"], &["LKA", "MMR"], 0.0, 0), one);
    }

    /// A refused bounding box says which edge is wrong and how.
    #[test]
    fn a_bad_bounding_box_names_its_problem() {
        assert_eq!(bbox_problem(&bbox(-10.0, 100.0, 5.0, 130.0)), None);
        assert_eq!(bbox_problem(&bbox(-90.0, -180.0, 90.0, 180.0)), None);
        let said = |b| bbox_problem(&b).unwrap();
        assert!(
            said(bbox(10.0, 0.0, -10.0, 20.0))
                .starts_with("min_latitude 10 is north of max_latitude -10")
        );
        assert!(
            said(bbox(0.0, 20.0, 10.0, 0.0))
                .starts_with("min_longitude 20 is east of max_longitude 0")
        );
        assert_eq!(
            said(bbox(0.0, 0.0, 95.0, 10.0)),
            "max_latitude 95 is not in -90..90"
        );
        assert_eq!(
            said(bbox(0.0, f64::NAN, 5.0, 10.0)),
            "min_longitude NaN is not in -180..180"
        );
    }
}
