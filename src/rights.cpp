// rights.cpp — channel rights (issue #11 part 5): a DBA grants 'publish' and/or 'read' on a
// channel or a pattern ('tenant_42', 'tenant_%'; see channel_pattern.hpp) to a role with
// outbox.grant_channel(); the rules live in outbox.channel_rights (src/sql/95_channels.sql).
//
// The model:
//   * Enforcement is per privilege: as long as no 'publish' right exists, every role with
//     EXECUTE on publish() may publish on every channel (1.1's behaviour), and likewise for
//     'read'. The first right of a kind switches that kind on for every channel: from then
//     on a channel no rule covers is refused (fail closed, also for a new tenant's channel).
//   * A right is held through role membership with inheritance (has_privs_of_role, i.e.
//     pg_has_role(..., 'USAGE')): a right granted to a group is every member's.
//   * Superusers and members of outbox_admin hold every right. Members of outbox_reader hold
//     'read' on every channel: they may SELECT outbox.history itself, which channel rights
//     cannot filter; tenants read through outbox_consumer, which has only the functions.
//   * Whose rights: the role that called the pg_outbox function. publish() is not SECURITY
//     DEFINER, so that is current_user (also inside the caller's own SECURITY DEFINER
//     function: its owner). The reading functions are SECURITY DEFINER (they read tables the
//     caller may not), so current_user inside them is the extension's owner; an fmgr hook keeps
//     a stack of the users that SECURITY DEFINER (and SET-clause) functions run as, and the
//     caller is the user that was current just below pg_outbox's own frames (or the session's
//     current role if there is none). Inside a security-restricted operation (REFRESH
//     MATERIALIZED VIEW, maintenance commands) the caller cannot be told: refused.
//   * The change trigger publishes with the rights of the table's owner; outbox.attach() refuses
//     a fixed channel the owner may not publish on.
//   * Any role may LISTEN on any channel: while read rights exist, the drain sends envelopes
//     with id, pos and seq only (notifications_id_only()), and consumers read from replay.
//
// Cost. The rules are cached per backend and loaded on first use after an invalidation: a
// statement trigger on outbox.channel_rights sends a relcache invalidation of that table on
// every write (grant_channel, revoke_channel, a DBA's own DML, pg_restore's COPY), delivered
// at commit to every backend like any catalog change. With no right of a kind, a check is a
// flag test. With rights, a check walks the rules of that kind (pattern match, then a
// membership test that acl.c caches).
#include "channel_pattern.hpp" // pure C++ first
#include "pg_outbox.hpp"
#include "rights.hpp"
#include "guard.hpp"
#include "invalidation.hpp"
#include "xact_events.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/parallel.h"
#include "access/xact.h"
#include "access/genam.h"
#include "catalog/dependency.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "utils/fmgroids.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "storage/lmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
}

namespace pg_outbox {

// ---------------------------------------------------------------------------------------
// Who called: a stack of the users SECURITY DEFINER / SET-clause functions run as
// ---------------------------------------------------------------------------------------

struct Frame {
	Oid fn;
	Oid user; // the current user while the function runs (after fmgr switched to its owner)
	int8 ours; // -1 not known yet, 0 no, 1 a member of extension pg_outbox
};
constexpr int kMaxFrames = 256;
static Frame frames[kMaxFrames];
static int depth = 0; // may exceed kMaxFrames: those frames are not recorded
static fmgr_hook_type prev_fmgr_hook = nullptr;

static void fmgr_hook_fn(FmgrHookEventType event, FmgrInfo *flinfo, Datum *arg) {
	boundary([&] {
		if (prev_fmgr_hook)
			prev_fmgr_hook(event, flinfo, arg);
		switch (event) {
		case FHET_START:
			if (depth < kMaxFrames)
				frames[depth] = Frame{flinfo->fn_oid, GetUserId(), -1};
			depth++;
			break;
		case FHET_END:
		case FHET_ABORT:
			if (depth > 0)
				depth--;
			break;
		}
	});
}

// the end of a transaction (xact_events.cpp)
void rights_xact_event(XactEvent event) {
	// no SECURITY DEFINER or SET-clause function is running at the end of a transaction
	// (they cannot commit): a stack left over by anything unforeseen starts empty again
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
	    event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
		depth = 0;
}

// ---------------------------------------------------------------------------------------
// The cached rules
// ---------------------------------------------------------------------------------------

struct Rule {
	char *pattern;
	int len;
	Oid role;
	int privs;
};

struct Cache {
	bool valid;
	Oid ext;         // extension pg_outbox
	Oid relid;       // outbox.channel_rights (InvalidOid: none, e.g. an older version)
	Oid admin_role;  // outbox_admin
	Oid reader_role; // outbox_reader
	int enforced;    // kPrivPublish | kPrivRead: kinds with at least one rule
	int nrules;
	Rule *rules;
};
static Cache cache = {};
static uint64 inval_count = 0;
static MemoryContext rights_cxt = nullptr;

// The last answer per privilege: a publisher usually publishes on one channel again and again.
// Valid while the cache is (any change of the rules, of roles or of memberships clears both).
struct Memo {
	bool set;
	bool allowed;
	Oid role;
	int len;
	char channel[NAMEDATALEN];
};
static Memo memo[2];
static void last_fn_valid_reset(void);

static void invalidate(void) {
	cache.valid = false;
	inval_count++;
	memo[0].set = memo[1].set = false;
	last_fn_valid_reset();
}

// the invalidations (invalidation.cpp)
void rights_forget_relation(Oid relid) {
	if (!OidIsValid(relid) || !OidIsValid(cache.relid) || relid == cache.relid)
		invalidate();
}

// A role dropped or re-created changes the OIDs of outbox_admin and outbox_reader; a membership
// granted or revoked changes the answers the memo holds.
void rights_forget_roles(void) {
	invalidate();
}

static int privilege_bit(const char *p) {
	if (strcmp(p, "publish") == 0)
		return kPrivPublish;
	if (strcmp(p, "read") == 0)
		return kPrivRead;
	return 0;
}

// pg_extension.extnamespace of extension ext (InvalidOid if there is none).
static Oid extension_namespace(Oid ext) {
	Relation rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(ext));
	SysScanDesc scan = systable_beginscan(rel, ExtensionOidIndexId, true, nullptr, 1, &key);
	HeapTuple tup = systable_getnext(scan);
	Oid nsp = HeapTupleIsValid(tup) ? ((Form_pg_extension)GETSTRUCT(tup))->extnamespace : InvalidOid;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

// self_fn: a pg_outbox function (the extension is the one it belongs to), or InvalidOid (the
// drain: the extension pg_outbox of this database).
static void load(Oid self_fn) {
	uint64 before = inval_count;
	if (!rights_cxt)
		rights_cxt = AllocSetContextCreate(CacheMemoryContext, "pg_outbox channel rights", ALLOCSET_SMALL_SIZES);
	MemoryContextReset(rights_cxt);
	cache = Cache{};
	Oid nsp;
	if (OidIsValid(self_fn)) {
		cache.ext = getExtensionOfObject(ProcedureRelationId, self_fn);
		if (!OidIsValid(cache.ext))
			ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			                errmsg("function %u is not a member of extension pg_outbox", self_fn)));
		nsp = get_func_namespace(self_fn);
	} else {
		cache.ext = get_extension_oid("pg_outbox", true);
		nsp = OidIsValid(cache.ext) ? extension_namespace(cache.ext) : InvalidOid;
	}
	Oid relid = OidIsValid(nsp) ? get_relname_relid("channel_rights", nsp) : InvalidOid;
	cache.admin_role = get_role_oid("outbox_admin", true);
	cache.reader_role = get_role_oid("outbox_reader", true);
	if (OidIsValid(relid)) {
		// only the extension's own table counts: an object of the same name that the extension
		// does not own is an error, never a source of rights
		if (getExtensionOfObject(RelationRelationId, relid) != cache.ext)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			                errmsg("table \"channel_rights\" in schema \"%s\" is not a member of extension pg_outbox",
			                       get_namespace_name(nsp)),
			                errhint("Drop it, then ALTER EXTENSION pg_outbox UPDATE or reinstall the extension.")));
		cache.relid = relid;
		Relation rel = table_open(relid, AccessShareLock);
		TupleDesc desc = RelationGetDescr(rel);
		if (desc->natts < 3 || TupleDescAttr(desc, 0)->atttypid != TEXTOID ||
		    TupleDescAttr(desc, 1)->atttypid != REGROLEOID || TupleDescAttr(desc, 2)->atttypid != TEXTOID)
			ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			                errmsg("table outbox.channel_rights does not have the columns (pattern text, role regrole, "
			                       "privilege text)"),
			                errhint("Reinstall the extension.")));
		// the latest committed state (and this transaction's own writes): an invalidation that
		// arrives while loading makes the next check load again
		Snapshot snap = RegisterSnapshot(GetLatestSnapshot());
		TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
		int cap = 16;
		Rule *rules = (Rule *)MemoryContextAlloc(rights_cxt, cap * sizeof(Rule));
		int n = 0;
		HeapTuple tup;
		while ((tup = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
			bool pnull, rnull, vnull;
			Datum pat = heap_getattr(tup, 1, desc, &pnull);
			Datum role = heap_getattr(tup, 2, desc, &rnull);
			Datum priv = heap_getattr(tup, 3, desc, &vnull);
			if (pnull || rnull || vnull)
				continue;
			char *privs = TextDatumGetCString(priv);
			int bit = privilege_bit(privs);
			pfree(privs);
			// An unknown privilege or a broken pattern grants nothing, but still switches
			// enforcement on for both kinds: a damaged table fails closed.
			text *pt = DatumGetTextPP(pat);
			int len = VARSIZE_ANY_EXHDR(pt);
			if (bit == 0 || check_channel_pattern(std::string_view(VARDATA_ANY(pt), len)) != PatternCheck::Ok) {
				cache.enforced |= kPrivPublish | kPrivRead;
				continue;
			}
			cache.enforced |= bit;
			if (n == cap) {
				cap *= 2;
				rules = (Rule *)repalloc(rules, cap * sizeof(Rule));
			}
			rules[n].pattern = (char *)MemoryContextAlloc(rights_cxt, len + 1);
			memcpy(rules[n].pattern, VARDATA_ANY(pt), len);
			rules[n].pattern[len] = '\0';
			rules[n].len = len;
			rules[n].role = DatumGetObjectId(role);
			rules[n].privs = bit;
			n++;
		}
		table_endscan(scan);
		UnregisterSnapshot(snap);
		table_close(rel, AccessShareLock);
		cache.rules = rules;
		cache.nrules = n;
	}
	cache.valid = inval_count == before;
}

static inline void ensure_loaded(Oid self_fn) {
	if (unlikely(!cache.valid))
		load(self_fn);
}

bool rights_enforced(int privilege, Oid self_fn) {
	ensure_loaded(self_fn);
	return (cache.enforced & privilege) != 0;
}

// (the last function asked about is remembered: a loop that calls pg_outbox from the same
// function of its own asks about that one only once; cleared with the cache)
static Oid last_fn = InvalidOid;
static bool last_fn_ours = false;

static void last_fn_valid_reset(void) {
	last_fn = InvalidOid;
}

void rights_forget_function(void) {
	last_fn = InvalidOid;
}

static bool frame_is_ours(Frame *f) {
	if (f->ours < 0) {
		if (f->fn != last_fn || !OidIsValid(last_fn)) {
			last_fn_ours = OidIsValid(cache.ext) && getExtensionOfObject(ProcedureRelationId, f->fn) == cache.ext;
			last_fn = f->fn;
		}
		f->ours = last_fn_ours ? 1 : 0;
	}
	return f->ours == 1;
}

// The role whose rights apply: see the head comment. InvalidOid: cannot be told (refuse).
static Oid caller_role(void) {
	// a parallel worker has not seen the leader's frames
	if (depth > kMaxFrames || IsParallelWorker())
		return InvalidOid;
	int i = depth;
	while (i > 0 && frame_is_ours(&frames[i - 1]))
		i--;
	if (i == depth)
		return GetUserId(); // not called from a pg_outbox function that switched users
	if (InSecurityRestrictedOperation())
		return InvalidOid;
	return i > 0 ? frames[i - 1].user : GetOuterUserId();
}

static bool has_right_uncached(Oid role, const char *channel, int len, int privilege);

static bool has_right(Oid role, const char *channel, int len, int privilege) {
	if (!(cache.enforced & privilege))
		return true;
	Memo &m = memo[privilege == kPrivPublish ? 0 : 1];
	if (m.set && m.role == role && m.len == len && memcmp(m.channel, channel, len) == 0)
		return m.allowed;
	bool allowed = has_right_uncached(role, channel, len, privilege);
	if (len < NAMEDATALEN) {
		m.role = role;
		m.len = len;
		memcpy(m.channel, channel, len);
		m.allowed = allowed;
		m.set = true;
	}
	return allowed;
}

static bool has_right_uncached(Oid role, const char *channel, int len, int privilege) {
	if (superuser_arg(role))
		return true;
	if (OidIsValid(cache.admin_role) && has_privs_of_role(role, cache.admin_role))
		return true;
	if (privilege == kPrivRead && OidIsValid(cache.reader_role) && has_privs_of_role(role, cache.reader_role))
		return true;
	std::string_view ch(channel, len);
	for (int i = 0; i < cache.nrules; i++) {
		const Rule &r = cache.rules[i];
		if ((r.privs & privilege) && channel_matches(std::string_view(r.pattern, r.len), ch) &&
		    has_privs_of_role(role, r.role))
			return true;
	}
	return false;
}

static const char *role_name(Oid role) {
	char *name = GetUserNameFromId(role, true);
	return name ? name : psprintf("%u", role);
}

[[noreturn]] static void refuse_unknown_caller(void) {
	ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
	                errmsg("pg_outbox cannot tell which role called it, so channel rights cannot be checked"),
	                errdetail("pg_outbox was called inside a security-restricted operation (such as REFRESH "
	                          "MATERIALIZED VIEW) or too deeply nested SECURITY DEFINER functions."),
	                errhint("Call it directly, as the role whose channel rights apply.")));
}

[[noreturn]] static void refuse(Oid role, const char *channel, int len, int privilege, const char *as_what) {
	const char *verb = privilege == kPrivPublish ? "publish on" : "read";
	ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
	                errmsg("permission denied to %s channel \"%.*s\"", verb, len, channel),
	                errdetail("Role \"%s\"%s has no %s right on this channel or a pattern that covers it.",
	                          role_name(role), as_what ? as_what : "", privilege == kPrivPublish ? "publish" : "read"),
	                errhint("outbox.channel_privileges lists the rights; a member of outbox_admin grants one with "
	                        "outbox.grant_channel().")));
}

void require_publish(const char *channel, Oid self_fn) {
	ensure_loaded(self_fn);
	if (likely(!(cache.enforced & kPrivPublish)))
		return;
	Oid role = caller_role();
	if (!OidIsValid(role))
		refuse_unknown_caller();
	int len = (int)strlen(channel);
	if (!has_right(role, channel, len, kPrivPublish))
		refuse(role, channel, len, kPrivPublish, nullptr);
}

void require_publish_as_owner(const char *channel, Relation rel, Oid self_fn) {
	ensure_loaded(self_fn);
	if (likely(!(cache.enforced & kPrivPublish)))
		return;
	Oid owner = rel->rd_rel->relowner;
	int len = (int)strlen(channel);
	if (!has_right(owner, channel, len, kPrivPublish))
		refuse(owner, channel, len, kPrivPublish,
		       psprintf(" (the owner of table %s, whose rights the change trigger publishes with)",
		                quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
		                                           RelationGetRelationName(rel))));
}

void rights_init(void) {
	prev_fmgr_hook = fmgr_hook;
	fmgr_hook = fmgr_hook_fn;
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox._check_read(channels text[]) RETURNS boolean — called by the reading functions before
// they read. Raises 42501 naming the first channel of channels the caller may not read. Returns
// true when the caller may read every channel it asked for (NULL: every channel), false when
// channels is NULL and the caller may read only some: the function then returns only the rows
// for which outbox._may_read(channel) is true.
PGO_FUNCTION(outbox_check_read) {
	Oid self = fcinfo->flinfo->fn_oid;
	ensure_loaded(self);
	if (!(cache.enforced & kPrivRead))
		PG_RETURN_BOOL(true);
	Oid role = caller_role();
	if (!OidIsValid(role))
		refuse_unknown_caller();
	if (superuser_arg(role) || (OidIsValid(cache.admin_role) && has_privs_of_role(role, cache.admin_role)) ||
	    (OidIsValid(cache.reader_role) && has_privs_of_role(role, cache.reader_role)))
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	ArrayType *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum *elems;
	bool *nulls;
	int n;
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++) {
		if (nulls[i])
			continue; // the caller's own argument checks report NULL channels
		text *t = DatumGetTextPP(elems[i]);
		int len = VARSIZE_ANY_EXHDR(t);
		if (!has_right(role, VARDATA_ANY(t), len, kPrivRead))
			refuse(role, VARDATA_ANY(t), len, kPrivRead, nullptr);
	}
	PG_RETURN_BOOL(true);
}

// outbox._may_read(channel text) RETURNS boolean — may the caller read this channel?
PGO_FUNCTION(outbox_may_read) {
	Oid self = fcinfo->flinfo->fn_oid;
	ensure_loaded(self);
	if (!(cache.enforced & kPrivRead))
		PG_RETURN_BOOL(true);
	Oid role = caller_role();
	if (!OidIsValid(role))
		refuse_unknown_caller();
	text *t = PG_GETARG_TEXT_PP(0);
	PG_RETURN_BOOL(has_right(role, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), kPrivRead));
}

// outbox._check_channel_pattern(pattern text) RETURNS void — grant_channel's validation.
PGO_FUNCTION(outbox_check_channel_pattern) {
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("channel pattern cannot be NULL")));
	text *t = PG_GETARG_TEXT_PP(0);
	int len = VARSIZE_ANY_EXHDR(t);
	PatternCheck c = check_channel_pattern(std::string_view(VARDATA_ANY(t), len));
	if (c == PatternCheck::Empty)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("channel pattern cannot be empty"),
		                errhint("Pass a channel name, or a pattern such as 'tenant_%%'.")));
	if (c == PatternCheck::TooLong)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("channel pattern is too long: %d bytes, the limit is %d bytes", len,
		                       (int)kMaxPatternBytes)));
	if (c == PatternCheck::TrailingEscape)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("channel pattern \"%.*s\" ends with an escape character", len, VARDATA_ANY(t)),
		                errhint("A backslash makes the next character literal: '\\%%' is a percent sign, '\\\\' "
		                        "a backslash.")));
	PG_RETURN_BOOL(pattern_has_wildcard(std::string_view(VARDATA_ANY(t), len)));
}

// Statement trigger on outbox.channel_rights: every backend loads the rules again after this
// transaction commits (and this one after this statement).
PGO_FUNCTION(outbox_rights_changed) {
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("outbox._rights_changed() must be called as a trigger")));
	TriggerData *td = (TriggerData *)fcinfo->context;
	// The log's pass (log_pass.cpp) reads notifications_id_only() from this cache after it took
	// the batch lock and its snapshot. A commit is visible before its invalidation is sent, so a
	// pass in between saw a read right granted and still sent whole envelopes (the reference,
	// reading the table, sent id-only ones): hold the batch lock to the end of the transaction,
	// so that no pass runs in between. (Not on TRUNCATE: its ACCESS EXCLUSIVE lock, taken
	// before, could deadlock with a pass reloading the rules; and removing rights leaves nothing
	// to leak.)
	if (!TRIGGER_FIRED_BY_TRUNCATE(td->tg_event)) {
		Oid batches = extension_relation("batches");
		if (OidIsValid(batches))
			LockRelationOid(batches, ShareRowExclusiveLock);
	}
	CacheInvalidateRelcache(td->tg_relation);
	return PointerGetDatum(nullptr);
}
