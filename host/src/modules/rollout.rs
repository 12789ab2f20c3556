//! The module rollout as a state machine: which module serves, which shadows, what a rollback
//! returns to, and where each `ReconcileModule` object stands. Pure: no I/O, no clock, no wasm.
//!
//! [`Rollout::step`] takes one [`Input`] (something the watch, the policy or a finished
//! validation reported) and returns the [`Effect`]s the shell (`manager.rs`) must carry out, in
//! order. Keeping every decision here, away from the API and the compiler, is what lets each
//! rule below be tested on its own.
//!
//! The rules, numbered as in the code:
//!
//! 1. An object that is being deleted (`deletionTimestamp` set) is never decided.
//! 2. A generation and rollback token already decided are not decided again, so a status-only
//!    update (ours, or another replica's) changes nothing.
//! 3. A new rollback token at the same generation asks for a rollback: it rolls back if a module
//!    of that object serves, and does nothing otherwise.
//! 4. A new generation whose status already says `RolledBack` at that very generation stays rolled
//!    back without being validated. If a module of that object serves here (a standby that missed
//!    the leader's rollback), this host rolls back too, so a failover does not bring it back.
//! 5. Any other new generation is validated: fetched, compiled and checked.
//! 6. A rejected module changes nothing: the serving module and the shadow stay.
//! 7. A validated `Active` module serves. The module it replaces goes to the history (at most
//!    [`HISTORY`], oldest forgotten); that module's object, if it is another one, is told it was
//!    superseded (`Pending`). If the object was the shadow, the shadow stops: it was promoted.
//! 8. A validated `Shadow` module replaces the shadow and its counts start over; the replaced
//!    shadow's object, if it is another one, is told it was superseded.
//! 9. A rollback applies only to the module serving now (a request about a module already
//!    swapped out is stale). It returns to the newest history entry whose digest differs from the
//!    failed module's, dropping the entries it skips, or to the baseline; the failed module's
//!    object becomes `RolledBack`.
//! 10. Deleting an object forgets it and drops its modules from the history; if it shadowed, the
//!     shadow stops; if it served, the baseline serves again and the history is cleared.
//! 11. A relist first deletes (rule 10) the objects that vanished while the watch was down, then
//!     applies the listed ones oldest first, so that with several `Active` objects the newest
//!     serves.
//! 12. Statuses and events are written only while leading. Swaps, shadows and metrics happen on
//!     every replica: standbys follow the objects so that they serve what the leader serves.
//! 13. Shadow counts are written (leader only) when they differ from the last ones written.
//! 14. Objects are decided one at a time, in the order the watch delivered them: while a
//!     validation is in flight, watch inputs wait, because each decision depends on what the
//!     earlier ones left serving.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use jiff::Timestamp;
use kube::ResourceExt;

pub use super::handle::Module;
use super::{
    report::{Note, ObjectRef, Report, StatusReport, Target},
    resource::{Mode, Phase, ReconcileModule, ShadowSummary},
};
use crate::{events::EventType, policy::Source, sandbox::Digest};

/// Annotation that asks the host to roll back from this (serving) module; its value is any
/// changing token, e.g. a timestamp (`module rollback` sets it).
pub const ROLLBACK_ANNOTATION: &str = "policy.wasm-replicaset.dev/rollback";
/// How many good modules the host remembers to roll back to.
pub const HISTORY: usize = 8;

/// Where one object stands on this host: the phase the leader writes to its status (a standby
/// decides the same, and writes nothing). What serves is the rollout's, not the objects': after
/// a rollback an older module serves again while its object still reads `Pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serves nothing and waits for a new generation: superseded by another object's module, or
    /// seen only while being deleted (never decided).
    Pending,
    /// Its generation is being fetched, compiled and checked; the watch inputs behind it wait.
    Validating,
    /// Its module was validated and made to serve.
    Active,
    /// Its module runs beside the serving one; its plans are compared, never applied.
    Shadow,
    /// Its generation failed validation; it stays so until a new generation.
    Rejected,
    /// Its module served and was rolled back; it stays so until a new generation.
    RolledBack,
}

/// Something the rollout must react to.
#[derive(Debug)]
pub enum Input<M> {
    /// The watch saw an object created or changed.
    Applied(ReconcileModule),
    /// The watch saw an object deleted.
    Deleted(ReconcileModule),
    /// The watch (re)listed: every object that exists now, in any order.
    Relisted(Vec<ReconcileModule>),
    /// The validation asked for by [`Effect::Validate`] finished: the module, or why not.
    Validated {
        /// The object that was validated.
        object: ReconcileModule,
        /// The module (with its source set to the object), or the reason, one line.
        outcome: Result<M, String>,
        /// How long fetching, compiling and checking took.
        took: Duration,
        /// When it finished: the module serves (or shadows) from then on.
        at: Timestamp,
    },
    /// The serving module failed `streak` syncs in a row (the policy's `--rollback-after`).
    FailureStreak {
        /// The handle that failed.
        failed: M,
        /// The key whose sync failed last.
        key: String,
        /// The last failure, one line.
        reason: String,
        /// How many failures in a row triggered it.
        streak: u32,
    },
    /// Whether this replica leads, i.e. writes statuses and events.
    Leading(bool),
    /// The shadow's counters now (read every few seconds).
    ShadowCounts(ShadowSummary),
    /// The counters of an [`Effect::ReportShadow`] were written.
    ShadowReported(ShadowSummary),
}

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Effect<M> {
    /// Fetch the object's bytes, compile and check them off the async threads, and answer with
    /// [`Input::Validated`]. (Boxed: an object may carry its module inline.)
    Validate(Box<ReconcileModule>),
    /// Make this module serve new syncs.
    Serve(M),
    /// Start shadowing this module (with fresh counts), or stop shadowing.
    Shadow(Option<M>),
    /// Emit an event about an object and write its status.
    Report(Report),
    /// Write the shadow counters to the status of object `name`; on success answer with
    /// [`Input::ShadowReported`].
    ReportShadow {
        /// The shadow object.
        name: String,
        /// The counters.
        summary: ShadowSummary,
    },
    /// Count a rollout outcome (`activated`, `shadowed`, `rejected`, `rolled_back`).
    Count(&'static str),
}

/// A watch input waiting for its turn (rule 14).
#[derive(Debug)]
enum Watched {
    Applied(ReconcileModule),
    Deleted(ReconcileModule),
    Relisted(Vec<ReconcileModule>),
}

/// What the rollout remembers of one object.
#[derive(Debug)]
struct Tracked {
    /// Its name, for log lines once it is gone.
    name: String,
    /// The generation and rollback token last decided; `None` while never decided (rule 1).
    decided: Option<(i64, Option<String>)>,
    /// Where it stands.
    state: State,
}

/// Why a rollback happens, for its message.
#[derive(Clone, Copy)]
enum Why<'a> {
    /// The policy's failure streak.
    Streak { key: &'a str, reason: &'a str, streak: u32 },
    /// A person, or the leader (seen in the object's status).
    Asked(&'a str),
}

/// The rollout of one namespace's `ReconcileModule` objects; see the module doc for the rules.
#[derive(Debug)]
pub struct Rollout<M> {
    /// The module the host started with (embedded or `--module`): where deleting the serving
    /// object returns to, and the last resort of a rollback.
    baseline: M,
    /// The module new syncs run on.
    serving: M,
    /// The module running beside it, if any.
    shadow: Option<M>,
    /// Modules that served before the current one, newest last.
    history: Vec<M>,
    /// Every object the watch delivered, by UID.
    objects: HashMap<String, Tracked>,
    /// The UID whose validation is in flight.
    validating: Option<String>,
    /// Watch inputs waiting for that validation (rule 14).
    backlog: VecDeque<Watched>,
    /// The shadow counters last written, so unchanged ones are not written again.
    shadow_reported: Option<ShadowSummary>,
    /// Whether statuses and events are written.
    leading: bool,
}

impl<M: Module> Rollout<M> {
    /// A rollout serving `baseline`, with no shadow and no history, writing until told otherwise.
    pub fn new(baseline: M) -> Self {
        Self {
            serving: baseline.clone(),
            baseline,
            shadow: None,
            history: Vec::new(),
            objects: HashMap::new(),
            validating: None,
            backlog: VecDeque::new(),
            shadow_reported: None,
            leading: true,
        }
    }

    /// Takes one input; returns what the shell must do, in order. Every [`Effect::Validate`] must
    /// be answered with [`Input::Validated`] before anything else is decided about objects.
    pub fn step(&mut self, input: Input<M>) -> Vec<Effect<M>> {
        let mut out = Vec::new();
        match input {
            Input::Applied(obj) => self.backlog.push_back(Watched::Applied(obj)),
            Input::Deleted(obj) => self.backlog.push_back(Watched::Deleted(obj)),
            Input::Relisted(objs) => self.backlog.push_back(Watched::Relisted(objs)),
            Input::Validated { object, outcome, took, at } => self.validated(&object, outcome, took, at, &mut out),
            Input::FailureStreak { failed, key, reason, streak } => {
                self.roll_back(&failed, Why::Streak { key: &key, reason: &reason, streak }, &mut out);
            }
            Input::Leading(leading) => self.leading = leading,
            Input::ShadowCounts(summary) => self.shadow_counts(summary, &mut out),
            Input::ShadowReported(summary) => self.shadow_reported = Some(summary),
        }
        self.drain(&mut out);
        out
    }

    /// Decides waiting watch inputs until one needs a validation (rule 14).
    fn drain(&mut self, out: &mut Vec<Effect<M>>) {
        while self.validating.is_none() {
            match self.backlog.pop_front() {
                Some(Watched::Applied(obj)) => self.applied(obj, out),
                Some(Watched::Deleted(obj)) => self.forget(&obj.uid().unwrap_or_default(), out),
                Some(Watched::Relisted(objs)) => self.relisted(objs, out),
                None => break,
            }
        }
    }

    /// Rules 1 to 5: what an applied object asks for.
    fn applied(&mut self, obj: ReconcileModule, out: &mut Vec<Effect<M>>) {
        let uid = obj.uid().unwrap_or_default();
        let generation = obj.metadata.generation.unwrap_or(0);
        let token = obj.annotations().get(ROLLBACK_ANNOTATION).cloned();
        let tracked = self.objects.entry(uid.clone()).or_insert_with(|| Tracked {
            name: String::new(),
            decided: None,
            state: State::Pending,
        });
        tracked.name = obj.name_any();
        // 1. Being deleted: the Deleted input will follow.
        if obj.metadata.deletion_timestamp.is_some() {
            return;
        }
        match tracked.decided.replace((generation, token.clone())) {
            // 2. Already decided.
            Some((g, t)) if g == generation && t == token => {}
            // 3. Only the rollback token changed.
            Some((g, _)) if g == generation => {
                self.roll_back_object(&uid, "rollback requested (wasm-replicaset module rollback)", out);
            }
            // 4. Rolled back at this generation, by the leader or an earlier host.
            _ if obj.status.as_ref().is_some_and(|s| rolled_back_at(s, generation)) => {
                self.set_state(&uid, State::RolledBack);
                let reason = obj.status.as_ref().and_then(|s| s.message.as_deref());
                self.roll_back_object(&uid, reason.unwrap_or("rolled back by the leader"), out);
            }
            // 5. A new generation to validate.
            _ => {
                self.set_state(&uid, State::Validating);
                self.validating = Some(uid);
                out.push(Effect::Validate(Box::new(obj)));
            }
        }
    }

    /// Rules 3 and 4: rolls back if a module of the object with `uid` serves.
    fn roll_back_object(&mut self, uid: &str, reason: &str, out: &mut Vec<Effect<M>>) {
        if self.serving.comes_from(uid) {
            let failed = self.serving.clone();
            self.roll_back(&failed, Why::Asked(reason), out);
        }
    }

    /// Rules 6 to 8: a validation finished.
    fn validated(
        &mut self,
        obj: &ReconcileModule,
        outcome: Result<M, String>,
        took: Duration,
        at: Timestamp,
        out: &mut Vec<Effect<M>>,
    ) {
        let uid = obj.uid().unwrap_or_default();
        // Only the answer to the validation in flight counts; the shell never sends another.
        if self.validating.as_deref() != Some(uid.as_str()) {
            return;
        }
        self.validating = None;
        match (outcome, obj.spec.mode) {
            (Err(reason), _) => self.reject(obj, reason, out),
            (Ok(module), Mode::Active) => self.activate(obj, &module, took, at, out),
            (Ok(module), Mode::Shadow) => self.start_shadow(obj, &module, at, out),
        }
    }

    /// Rule 6: nothing changes but the object's status.
    fn reject(&mut self, obj: &ReconcileModule, reason: String, out: &mut Vec<Effect<M>>) {
        let name = obj.name_any();
        tracing::warn!(object = %name, %reason, "module rejected; the serving module is unchanged");
        self.set_state(&obj.uid().unwrap_or_default(), State::Rejected);
        out.push(Effect::Count("rejected"));
        let note = Note { kind: EventType::Warning, reason: "Rejected", message: reason.clone() };
        let status =
            StatusReport { phase: Phase::Rejected, module: None, message: reason, since: None, failing_key: None };
        self.report(Target::Seen(ObjectRef::of(obj)), Some(note), status, out);
    }

    /// Rule 7: the module serves; what served goes to the history.
    fn activate(&mut self, obj: &ReconcileModule, module: &M, took: Duration, at: Timestamp, out: &mut Vec<Effect<M>>) {
        let (uid, name) = (obj.uid().unwrap_or_default(), obj.name_any());
        let previous = std::mem::replace(&mut self.serving, module.clone());
        out.push(Effect::Serve(module.clone()));
        if self.shadow.as_ref().is_some_and(|s| s.comes_from(&uid)) {
            // Promoted from shadow to active: it cannot be compared with itself.
            self.shadow = None;
            out.push(Effect::Shadow(None));
        }
        tracing::info!(object = %name, module = %module.digest(), from = %previous.digest().short(), "policy module activated");
        self.set_state(&uid, State::Active);
        out.push(Effect::Count("activated"));
        let note = Note {
            kind: EventType::Normal,
            reason: "Activated",
            message: format!("Module {} now serves every sync", module.digest()),
        };
        let status = StatusReport {
            phase: Phase::Active,
            module: Some(facts(module)),
            message: format!("serving since {at} (validated in {took:?}, contract {})", module.contract_version()),
            since: Some(at),
            failing_key: None,
        };
        self.report(Target::Seen(ObjectRef::of(obj)), Some(note), status, out);
        self.supersede(&previous, &name, out);
        self.history.push(previous);
        if self.history.len() > HISTORY {
            self.history.remove(0);
        }
    }

    /// Rule 8: the module shadows; the previous shadow is superseded.
    fn start_shadow(&mut self, obj: &ReconcileModule, module: &M, at: Timestamp, out: &mut Vec<Effect<M>>) {
        let (uid, name) = (obj.uid().unwrap_or_default(), obj.name_any());
        let previous = self.shadow.replace(module.clone());
        out.push(Effect::Shadow(Some(module.clone())));
        // New counts: the first report of this shadow is always written.
        self.shadow_reported = None;
        tracing::info!(object = %name, module = %module.digest(), "shadow module started: its plans are compared, never applied");
        self.set_state(&uid, State::Shadow);
        out.push(Effect::Count("shadowed"));
        let note = Note {
            kind: EventType::Normal,
            reason: "Shadowing",
            message: format!("Module {} runs beside the active module; its plans are never applied", module.digest()),
        };
        let status = StatusReport {
            phase: Phase::Shadow,
            module: Some(facts(module)),
            message: "shadowing: comparing plans with the active module".into(),
            since: Some(at),
            failing_key: None,
        };
        self.report(Target::Seen(ObjectRef::of(obj)), Some(note), status, out);
        if let Some(previous) = previous.filter(|p| !p.comes_from(&uid)) {
            self.supersede(&previous, &name, out);
        }
    }

    /// Rules 7 and 8: tells the object of `previous` that the object `by` replaced it.
    fn supersede(&mut self, previous: &M, by: &str, out: &mut Vec<Effect<M>>) {
        // Matched by name, as the status is written by name: a re-push of the same object
        // (a new generation) supersedes nothing.
        let Source::Object { name, uid, .. } = previous.source() else { return };
        if name == by {
            return;
        }
        self.set_state(uid, State::Pending);
        let status = StatusReport {
            phase: Phase::Pending,
            module: Some(facts(previous)),
            message: format!("superseded by ReconcileModule {by}; push it again to serve it"),
            since: None,
            failing_key: None,
        };
        self.report(Target::Named(name.clone()), None, status, out);
    }

    /// Rule 9: returns from `failed` to the last good module, or the baseline.
    fn roll_back(&mut self, failed: &M, why: Why<'_>, out: &mut Vec<Effect<M>>) {
        if !self.serving.is(failed) {
            return;
        }
        // The same bytes would fail the same way: skip history entries with the failed digest.
        let good = loop {
            match self.history.pop() {
                Some(candidate) if candidate.digest() != failed.digest() => break candidate,
                Some(_) => {}
                None => break self.baseline.clone(),
            }
        };
        self.serving = good.clone();
        out.push(Effect::Serve(good.clone()));
        let to = format!("rolled back to {} ({})", good.digest().short(), good.source());
        let (message, failing_key) = match why {
            Why::Streak { key, reason, streak } => {
                (format!("{to}: failed {streak} syncs in a row, the last on {key}: {reason}"), Some(key.to_string()))
            }
            Why::Asked(reason) => (format!("{to}: {reason}"), None),
        };
        tracing::warn!(module = %failed.digest(), to = %good.digest(), "{message}");
        out.push(Effect::Count("rolled_back"));
        let Source::Object { name, uid, .. } = failed.source() else { return };
        self.set_state(uid, State::RolledBack);
        let note = Note { kind: EventType::Warning, reason: "RolledBack", message: message.clone() };
        let status =
            StatusReport { phase: Phase::RolledBack, module: Some(facts(failed)), message, since: None, failing_key };
        self.report(Target::Named(name.clone()), Some(note), status, out);
    }

    /// Rule 10: the object with `uid` is gone.
    fn forget(&mut self, uid: &str, out: &mut Vec<Effect<M>>) {
        let name = self.objects.remove(uid).map(|t| t.name).unwrap_or_default();
        self.history.retain(|m| !m.comes_from(uid));
        if self.shadow.as_ref().is_some_and(|s| s.comes_from(uid)) {
            self.shadow = None;
            out.push(Effect::Shadow(None));
            tracing::info!(object = %name, "shadow module removed");
        }
        if self.serving.comes_from(uid) {
            self.serving = self.baseline.clone();
            out.push(Effect::Serve(self.baseline.clone()));
            // The history led up to the deleted object's module; the baseline is a fresh start.
            self.history.clear();
            tracing::info!(object = %name, module = %self.baseline.digest(), source = %self.baseline.source(), "serving module's object deleted; back to the baseline module");
        }
    }

    /// Rule 11: a relist replaces what the watch told us.
    fn relisted(&mut self, mut listed: Vec<ReconcileModule>, out: &mut Vec<Effect<M>>) {
        let present: HashSet<String> = listed.iter().filter_map(kube::ResourceExt::uid).collect();
        let mut gone: Vec<String> = self.objects.keys().filter(|uid| !present.contains(*uid)).cloned().collect();
        // Sorted only so that log lines come in the same order on every run.
        gone.sort();
        for uid in gone {
            self.forget(&uid, out);
        }
        // Oldest first (a stable sort), so that with several Active objects the newest wins.
        listed.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
        for obj in listed.into_iter().rev() {
            self.backlog.push_front(Watched::Applied(obj));
        }
    }

    /// Rule 13: shadow counters are written only when they changed.
    fn shadow_counts(&mut self, summary: ShadowSummary, out: &mut Vec<Effect<M>>) {
        if !self.leading || self.shadow_reported.as_ref() == Some(&summary) {
            return;
        }
        if let Some(Source::Object { name, .. }) = self.shadow.as_ref().map(M::source) {
            out.push(Effect::ReportShadow { name: name.clone(), summary });
        }
    }

    /// Rule 12: statuses and events only while leading.
    fn report(&self, to: Target, event: Option<Note>, status: StatusReport, out: &mut Vec<Effect<M>>) {
        if self.leading {
            out.push(Effect::Report(Report { to, event, status }));
        }
    }

    fn set_state(&mut self, uid: &str, state: State) {
        if let Some(tracked) = self.objects.get_mut(uid) {
            tracked.state = state;
        }
    }
}

/// Whether `status` says the object was rolled back at `generation` (rule 4).
fn rolled_back_at(status: &super::resource::ReconcileModuleStatus, generation: i64) -> bool {
    status.phase == Some(Phase::RolledBack) && status.observed_generation == Some(generation)
}

/// What a status says about a module.
fn facts<M: Module>(module: &M) -> (Digest, String) {
    (module.digest(), module.contract_version().to_string())
}

// === test accessors ===

#[cfg(test)]
impl<M: Module> Rollout<M> {
    /// The module new syncs run on.
    pub fn serving(&self) -> &M {
        &self.serving
    }

    /// The shadow, if any.
    pub fn shadow(&self) -> Option<&M> {
        self.shadow.as_ref()
    }

    /// The modules a rollback may return to, newest last.
    pub fn history(&self) -> &[M] {
        &self.history
    }

    /// Where the object with `uid` stands, if the rollout knows it.
    pub fn state(&self, uid: &str) -> Option<State> {
        self.objects.get(uid).map(|t| t.state)
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
