// pending_ddl.cpp — in log mode, refuse at DDL time what a DBA would add to outbox.pending that
// constrains or reacts to its rows (issue #15, doc/storage.md, "outbox.pending as a view"): a
// trigger (constraint triggers included), a rule, a CHECK, NOT NULL, UNIQUE, primary key,
// exclusion or foreign key constraint (by ALTER TABLE, by ADD COLUMN's column constraints, by a
// unique index, by a parent table's constraints through INHERIT or ATTACH PARTITION, or by a
// statement on an inheritance or partitioned parent that recurses into outbox.pending: ALTER
// TABLE, a row trigger, an index), row level security or a policy. In log mode publish() and the change trigger write the log, not outbox.pending: these
// would be accepted and silently never apply to an event. The switch (outbox.use_log_storage(),
// 65_log_switch.sql) refuses the same things when they exist at its time; this keeps them out
// after it. Called by the utility hook before the statement runs; the extension's own scripts
// (CREATE / ALTER EXTENSION pg_outbox) are let through.
#include "utility_hook.hpp"
#include "pg_outbox.hpp"
#include "log.hpp"
#include "pg_compat.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
}

namespace pg_outbox {

// What a constraint of ALTER TABLE ... ADD CONSTRAINT or of a new column adds (nullptr: nothing
// that constrains rows: DEFAULT, NULL, identity, generated, the attribute clauses).
static const char *constraint_addition(const Node *n) {
	if (!n || !IsA(n, Constraint))
		return nullptr;
	switch (reinterpret_cast<const Constraint *>(n)->contype) {
	case CONSTR_CHECK:
		return "a CHECK constraint";
	case CONSTR_NOTNULL:
		return "a NOT NULL constraint";
	case CONSTR_UNIQUE:
		return "a UNIQUE constraint";
	case CONSTR_PRIMARY:
		return "a primary key";
	case CONSTR_EXCLUSION:
		return "an exclusion constraint";
	case CONSTR_FOREIGN:
		return "a foreign key";
	default:
		return nullptr;
	}
}

// What one ALTER TABLE subcommand adds to its table (nullptr: nothing refused here). Dropping,
// disabling, renaming, indexes that are not unique, storage and ownership are left alone.
static const char *alter_table_addition(const AlterTableCmd *cmd) {
	switch (cmd->subtype) {
	case AT_AddConstraint:
		return constraint_addition(cmd->def);
	case AT_AddIndexConstraint:
		return "a constraint using an index";
	case AT_SetNotNull:
		return "a NOT NULL constraint";
	case AT_AddColumn: {
		const ColumnDef *col = castNode(ColumnDef, cmd->def);
		ListCell *lc;
		foreach (lc, col->constraints)
			if (const char *what = constraint_addition(static_cast<Node *>(lfirst(lc))))
				return what;
		return nullptr;
	}
	case AT_EnableRowSecurity:
	case AT_ForceRowSecurity:
		return "row level security";
	case AT_AddInherit:
		return "a parent table (its constraints)";
	default:
		return nullptr;
	}
}

// Does a statement on relid that recurses (ALTER TABLE without ONLY, a row trigger or an index on a
// partitioned table) reach pending, relid an inheritance or partition ancestor of it?
static bool reaches_by_inheritance(Oid relid, Oid pending) {
	if (!has_subclass(relid))
		return false;
	List *all = find_all_inheritors(relid, NoLock, nullptr);
	bool found = list_member_oid(all, pending);
	list_free(all);
	return found;
}

// The relation a RangeVar names (InvalidOid: none; the statement then fails by itself).
static Oid named_relation(RangeVar *rv) {
	return rv ? RangeVarGetRelid(rv, NoLock, true) : InvalidOid;
}

// What stmt would add to the relation pending (outbox.pending), as text for the message; nullptr
// when it adds nothing refused here or is about another relation (a table named pending in another
// schema is another relation). *target: the relation the statement names (pending, or a parent of
// it); *trigger_priv: the statement needs only the TRIGGER privilege on it.
static char *addition_to(Node *stmt, Oid pending, Oid *target, bool *trigger_priv) {
	*trigger_priv = false;
	*target = pending;
	switch (nodeTag(stmt)) {
	case T_CreateTrigStmt: {
		CreateTrigStmt *t = castNode(CreateTrigStmt, stmt);
		Oid relid = named_relation(t->relation);
		// a row trigger on a partitioned table is cloned onto its partitions
		bool through = relid != pending && t->row && OidIsValid(relid) && reaches_by_inheritance(relid, pending);
		if (relid != pending && !through)
			return nullptr;
		*target = relid;
		*trigger_priv = true;
		return psprintf("%s \"%s\"%s", t->isconstraint ? "constraint trigger" : "trigger", t->trigname,
		                through ? " (through its parent table)" : "");
	}
	case T_RuleStmt: {
		RuleStmt *r = castNode(RuleStmt, stmt);
		return named_relation(r->relation) == pending ? psprintf("rule \"%s\"", r->rulename) : nullptr;
	}
	case T_CreatePolicyStmt: {
		CreatePolicyStmt *p = castNode(CreatePolicyStmt, stmt);
		return named_relation(p->table) == pending ? psprintf("policy \"%s\"", p->policy_name) : nullptr;
	}
	case T_IndexStmt: {
		IndexStmt *i = castNode(IndexStmt, stmt);
		if (!(i->unique || i->primary || i->isconstraint || i->excludeOpNames))
			return nullptr;
		Oid relid = named_relation(i->relation);
		// an index on a partitioned table (without ONLY) is made on its partitions too
		bool through = relid != pending && i->relation->inh && OidIsValid(relid) && reaches_by_inheritance(relid, pending);
		if (relid != pending && !through)
			return nullptr;
		*target = relid;
		return psprintf("%s%s", i->excludeOpNames ? "an exclusion constraint" : "a unique index",
		                through ? " (through its parent table)" : "");
	}
	case T_AlterTableStmt: {
		AlterTableStmt *a = castNode(AlterTableStmt, stmt);
		Oid relid = named_relation(a->relation);
		if (!OidIsValid(relid))
			return nullptr;
		int recurses = -1; // does it reach pending through inheritance? (-1: not looked up yet)
		ListCell *lc;
		foreach (lc, a->cmds) { // every subcommand: the refused one may come after harmless ones
			const AlterTableCmd *cmd = static_cast<AlterTableCmd *>(lfirst(lc));
			if (cmd->subtype == AT_AttachPartition) { // outbox.pending as a partition of relid: its triggers, constraints
				const PartitionCmd *pc = castNode(PartitionCmd, cmd->def);
				if (named_relation(pc->name) == pending)
					return pstrdup("a partitioned parent table (its triggers, constraints and indexes)");
				continue;
			}
			const char *what = alter_table_addition(cmd);
			if (!what)
				continue;
			if (relid == pending)
				return pstrdup(what);
			bool inherited = cmd->subtype != AT_EnableRowSecurity && cmd->subtype != AT_ForceRowSecurity &&
			                 cmd->subtype != AT_AddInherit &&
			                 !(cmd->subtype == AT_AddConstraint && IsA(cmd->def, Constraint) &&
			                   castNode(Constraint, cmd->def)->is_no_inherit);
			if (inherited && recurses < 0)
				recurses = a->relation->inh && reaches_by_inheritance(relid, pending);
			if (inherited && recurses > 0) {
				*target = relid;
				return psprintf("%s (through its parent table)", what);
			}
		}
		return nullptr;
	}
	default:
		return nullptr;
	}
}

static bool may_be_refused(Node *stmt) {
	switch (nodeTag(stmt)) {
	case T_CreateTrigStmt:
	case T_RuleStmt:
	case T_CreatePolicyStmt:
	case T_IndexStmt:
	case T_AlterTableStmt:
		return true;
	default:
		return false;
	}
}

void check_pending_ddl(Node *stmt) {
	// (pg_upgrade's schema restore creates the extension's objects one by one, outside its script,
	// into tables still empty: nothing to refuse there either)
	if (!may_be_refused(stmt) || !IsTransactionState() || IsBinaryUpgrade)
		return;
	Oid nsp = extension_namespace(); // pg_extension's: still the extension's schema once renamed
	Oid pending = OidIsValid(nsp) ? get_relname_relid("pending", nsp) : InvalidOid;
	if (!OidIsValid(pending))
		return;
	// the extension's own install and upgrade scripts (they may create triggers on it, pending_to_log);
	// another extension's script is refused as a DBA is
	if (creating_extension && CurrentExtensionObject == get_extension_oid("pg_outbox", true))
		return;
	Oid target;
	bool trigger_priv;
	char *what = addition_to(stmt, pending, &target, &trigger_priv);
	if (!what)
		return;
	// A role that may not run the statement on the relation it names gets its own error from it,
	// and takes no lock here (it could otherwise queue a lock on outbox.pending that every producer
	// then waits behind). The owner of a parent may: a row trigger is cloned onto the partitions.
	Oid user = GetUserId();
	if (!compat::class_ownercheck(target, user) &&
	    !(trigger_priv && pg_class_aclcheck(target, user, ACL_TRIGGER) == ACLCHECK_OK))
		return;
	// The mode is read after a lock that conflicts with the switch's EXCLUSIVE lock on
	// outbox.pending (self-conflicting, so two such statements do not both hold it and then deadlock
	// upgrading to the statement's own lock): a switch that commits while this statement waits for
	// its lock is seen, and a switch that comes later finds what this statement added, and refuses.
	LockRelationOid(pending, ShareRowExclusiveLock);
	if (!log_storage_active_in(nsp, GetLatestSnapshot()))
		return;
	const char *relname = quote_qualified_identifier(get_namespace_name(nsp), "pending");
	ereport(ERROR,
	        (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
	         errmsg("cannot add %s to %s: database \"%s\" stores its events in the write-once log", what, relname,
	                get_database_name(MyDatabaseId)),
	         errdetail("In log mode outbox.publish() and the change trigger write the log, not %s: %s there would never "
	                   "apply to their events.",
	                   relname, what),
	         errhint("Put the check or the reaction into the application, or onto the tables the change trigger is "
	                 "attached to (outbox.attach()), or onto a table of your own; consumers see every published event "
	                 "through LISTEN, outbox.replay() and outbox.next().")));
}

} // namespace pg_outbox
