// schema_guard.cpp — pg_outbox trusts its own schema only.
//
// The drain worker runs as the bootstrap superuser, and the SECURITY DEFINER functions run as
// the extension's owner; both refer to the extension's objects by name (outbox.state, ...).
// A name is only as trustworthy as the schema it resolves in: whoever owns schema "outbox", or
// may create objects in it, or can give another schema that name, decides what outbox.state
// is — a view calling their function, run as a superuser (issue #11).
//
// So pg_outbox relies on three rules, each checked where it can be broken:
//   1. CREATE EXTENSION installs only into a schema "outbox" that it creates itself, or that is
//      as good as new: owned by a superuser, empty, nobody else may create objects in it (the
//      one a DROP EXTENSION left behind). check_new_extension_schema(), from the utility hook
//      before CREATE EXTENSION runs, and again at the top of the install script (which also
//      runs for CREATE EXTENSION ... CASCADE, where the hook does not look).
//   2. Non-superusers cannot rename the extension's schema (utility hook).
//   3. Before the worker's pass and before every SECURITY DEFINER function of the extension
//      (an fmgr hook), check_trusted_schema(): the schema named "outbox" is the extension's own
//      (pg_extension.extnamespace), a superuser owns it, no one else may create objects in it,
//      and the relations pg_outbox reads by name there are members of the extension
//      (pg_depend deptype 'e'). Anything else is an error; nothing in the schema runs.
// The result of 3 is cached until a namespace, role or relation changes (syscache callbacks),
// so a drain pays one flag test.
#include "pg_outbox.hpp"
#include "guard.hpp"
#include "history.hpp"
#include "invalidation.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "utils/array.h" // before pg_namespace.h: on 17 it pulls in acl.h, which needs the array macros
#include "catalog/pg_namespace.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
}

namespace pg_outbox {

// The relations pg_outbox's SQL (worker, SECURITY DEFINER functions) names in schema outbox.
// A helper that adds a table the SQL reads adds it here.
static const char *const kNamedRelations[] = {"pending",   "history",        "history_frozen", "history_0",
                                              "history_1", "history_2",      "state",          "channels",
                                              "channel_targets", "dead_letter", "consumer"};
static_assert(kSegments == 3, "kNamedRelations names history_0 .. history_2 (history.hpp: kSegments)");

static bool trusted = false;        // check_trusted_schema() passed, nothing changed since
static Oid trusted_nsp = InvalidOid; // the extension's schema when trusted

static bool ext_nsp_known = false;

// A relation, schema or role changed (invalidation.cpp): check again when next asked.
void schema_trust_forget(void) {
	trusted = false;
	ext_nsp_known = false;
}

// The pg_extension row of pg_outbox: its OID and schema (InvalidOid when not installed).
static Oid extension_schema(Oid *ext) {
	Relation rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ, CStringGetDatum("pg_outbox"));
	SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
	HeapTuple tup = systable_getnext(scan);
	Oid nsp = InvalidOid;
	*ext = InvalidOid;
	if (HeapTupleIsValid(tup)) {
		Form_pg_extension e = (Form_pg_extension)GETSTRUCT(tup);
		*ext = e->oid;
		nsp = e->extnamespace;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

// extension_schema(), cached until a namespace, role or relation changes (CREATE and DROP
// EXTENSION create and drop relations): the fmgr hook asks for every function it sees.
static Oid ext_nsp = InvalidOid;

Oid extension_namespace(void) {
	if (!ext_nsp_known) {
		Oid ext;
		ext_nsp = extension_schema(&ext);
		ext_nsp_known = true;
	}
	return ext_nsp;
}

Oid extension_relation(const char *relname) {
	Oid ext;
	Oid nsp = extension_schema(&ext);
	Oid relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;
	if (OidIsValid(relid) && getExtensionOfObject(RelationRelationId, relid) != ext)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("relation outbox.%s is not part of extension pg_outbox", relname),
		                errdetail("pg_outbox does not read or run an object it did not create."),
		                errhint("As a superuser, find out who created outbox.%s and drop it; then reinstall the "
		                        "extension or run ALTER EXTENSION pg_outbox UPDATE.",
		                        relname)));
	return relid;
}

static Oid schema_owner(Oid nsp) {
	HeapTuple tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	Oid owner = ((Form_pg_namespace)GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

static const char *role_name(Oid role) {
	if (role == ACL_ID_PUBLIC)
		return "PUBLIC";
	char *name = GetUserNameFromId(role, true);
	return name ? name : "(dropped role)";
}

// A role other than the schema's owner that may create objects in it and is no superuser
// (PUBLIC counts), or InvalidOid. *found tells whether there is one (PUBLIC is OID 0).
static Oid foreign_creator(HeapTuple nsptup, bool *found) {
	Form_pg_namespace n = (Form_pg_namespace)GETSTRUCT(nsptup);
	bool isnull;
	Datum d = SysCacheGetAttr(NAMESPACEOID, nsptup, Anum_pg_namespace_nspacl, &isnull);
	*found = false;
	if (isnull)
		return InvalidOid; // the default: the owner alone
	Acl *acl = DatumGetAclP(d);
	AclItem *items = ACL_DAT(acl);
	for (int i = 0; i < ACL_NUM(acl); i++) {
		if (!(ACLITEM_GET_PRIVS(items[i]) & ACL_CREATE) || items[i].ai_grantee == n->nspowner)
			continue;
		if (items[i].ai_grantee != ACL_ID_PUBLIC && superuser_arg(items[i].ai_grantee))
			continue;
		*found = true;
		return items[i].ai_grantee;
	}
	return InvalidOid;
}

// Some object that lives in schema nsp (other than the extension itself), described, or nullptr.
static char *some_object_in(Oid nsp) {
	Relation rel = table_open(DependRelationId, AccessShareLock);
	ScanKeyData key[2];
	ScanKeyInit(&key[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber, F_OIDEQ,
	            ObjectIdGetDatum(NamespaceRelationId));
	ScanKeyInit(&key[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(nsp));
	SysScanDesc scan = systable_beginscan(rel, DependReferenceIndexId, true, nullptr, 2, key);
	char *what = nullptr;
	for (HeapTuple tup; !what && HeapTupleIsValid(tup = systable_getnext(scan));) {
		Form_pg_depend d = (Form_pg_depend)GETSTRUCT(tup);
		if (d->classid == ExtensionRelationId)
			continue;
		ObjectAddress obj = {d->classid, d->objid, d->objsubid};
		what = getObjectDescription(&obj, true);
		if (!what)
			what = pstrdup("an object");
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return what;
}

constexpr const char *kReinstallHint = "pg_outbox installs into a schema \"outbox\" that it creates itself: drop or "
                                       "rename the existing schema (after checking what it contains), then run "
                                       "CREATE EXTENSION pg_outbox again.";

void check_new_extension_schema(void) {
	if (OidIsValid(get_extension_oid("pg_outbox", true)))
		return; // installed already: CREATE EXTENSION does nothing (IF NOT EXISTS) or fails by itself
	Oid nsp = get_namespace_oid("outbox", true);
	if (!OidIsValid(nsp))
		return; // CREATE EXTENSION creates it, owned by the installing superuser
	HeapTuple tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	if (!HeapTupleIsValid(tup))
		return;
	Oid owner = ((Form_pg_namespace)GETSTRUCT(tup))->nspowner;
	bool creator_found;
	Oid creator = foreign_creator(tup, &creator_found);
	ReleaseSysCache(tup);
	if (!superuser_arg(owner))
		ereport(ERROR, (errcode(ERRCODE_DUPLICATE_SCHEMA),
		                errmsg("schema \"outbox\" already exists and is owned by role \"%s\", which is not a superuser",
		                       role_name(owner)),
		                errdetail("The drain worker and pg_outbox's SECURITY DEFINER functions run as a superuser "
		                          "and find their objects in schema \"outbox\": its owner could replace them."),
		                errhint("%s", kReinstallHint)));
	if (creator_found)
		ereport(ERROR, (errcode(ERRCODE_DUPLICATE_SCHEMA),
		                errmsg("schema \"outbox\" already exists and role \"%s\" may create objects in it",
		                       role_name(creator)),
		                errdetail("The drain worker and pg_outbox's SECURITY DEFINER functions run as a superuser "
		                          "and find their objects in schema \"outbox\": whoever may create objects there "
		                          "could put their own in the way."),
		                errhint("%s", kReinstallHint)));
	if (char *what = some_object_in(nsp))
		ereport(ERROR, (errcode(ERRCODE_DUPLICATE_SCHEMA), errmsg("schema \"outbox\" already exists and is not empty"),
		                errdetail("It contains %s (and maybe more); pg_outbox installs only into a schema that "
		                          "holds nothing but its own objects.",
		                          what),
		                errhint("%s", kReinstallHint)));
}

void forget_extension_trust(void) {
	CacheInvalidateRelcacheAll(); // every backend, at commit
	trusted = false;
	ext_nsp_known = false;
}

void check_schema_rename(const char *schema) {
	if (superuser() || !schema)
		return;
	Oid nsp = get_namespace_oid(schema, true);
	if (OidIsValid(nsp) && nsp == extension_namespace())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
		                errmsg("schema \"%s\" belongs to extension pg_outbox and cannot be renamed", schema),
		                errdetail("pg_outbox refers to its objects as outbox.<name>."),
		                errhint("Only a superuser may rename it; pg_outbox stops working until it is called "
		                        "\"outbox\" again.")));
}

Oid check_trusted_schema(void) {
	if (trusted)
		return trusted_nsp;
	Oid ext;
	Oid nsp = extension_schema(&ext);
	if (!OidIsValid(ext))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
		                errmsg("extension pg_outbox is not installed in this database")));
	HeapTuple tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("the schema of extension pg_outbox does not exist")));
	Form_pg_namespace n = (Form_pg_namespace)GETSTRUCT(tup);
	char name[NAMEDATALEN];
	strlcpy(name, NameStr(n->nspname), sizeof name);
	Oid owner = n->nspowner;
	bool creator_found;
	Oid creator = foreign_creator(tup, &creator_found);
	ReleaseSysCache(tup);
	if (strcmp(name, "outbox") != 0) {
		Oid other = get_namespace_oid("outbox", true);
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("the schema of extension pg_outbox is called \"%s\", not \"outbox\"", name),
		                OidIsValid(other)
		                    ? errdetail("Schema \"outbox\" (owned by role \"%s\") is not the extension's: pg_outbox "
		                                "does not read or run anything in it.",
		                                role_name(schema_owner(other)))
		                    : errdetail("pg_outbox refers to its objects as outbox.<name>."),
		                errhint("As a superuser, check what schema \"outbox\" contains and drop it, then rename "
		                        "schema \"%s\" back to \"outbox\".",
		                        name)));
	}
	if (!superuser_arg(owner))
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("schema \"outbox\" is owned by role \"%s\", which is not a superuser", role_name(owner)),
		                errdetail("pg_outbox runs its SQL as a superuser and finds its objects in this schema: its "
		                          "owner could replace them, so pg_outbox does not run it."),
		                errhint("As a superuser, drop the objects in schema \"outbox\" that are not part of the "
		                        "extension, then ALTER SCHEMA outbox OWNER TO a superuser.")));
	if (creator_found)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("role \"%s\" may create objects in schema \"outbox\"", role_name(creator)),
		                errdetail("pg_outbox runs its SQL as a superuser and finds its objects in this schema: whoever "
		                          "may create objects there could put their own in the way."),
		                errhint("REVOKE CREATE ON SCHEMA outbox FROM %s; then drop what that role created there.",
		                        creator == ACL_ID_PUBLIC ? "PUBLIC" : quote_identifier(role_name(creator)))));
	for (const char *rel : kNamedRelations) {
		Oid relid = get_relname_relid(rel, nsp);
		if (OidIsValid(relid) && getExtensionOfObject(RelationRelationId, relid) != ext)
			ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			                errmsg("relation outbox.%s is not part of extension pg_outbox", rel),
			                errdetail("pg_outbox does not read or run an object it did not create."),
			                errhint("As a superuser, find out who created outbox.%s and drop it; then reinstall the "
			                        "extension or run ALTER EXTENSION pg_outbox UPDATE.",
			                        rel)));
	}
	trusted_nsp = nsp;
	trusted = true;
	return nsp;
}

// ---------------------------------------------------------------------------------------
// The fmgr hook: every SECURITY DEFINER function (and every function with a SET clause) passes
// through fmgr_security_definer(), which calls fmgr_hook when it starts. For functions in the
// extension's schema, check the schema first.
// ---------------------------------------------------------------------------------------
static fmgr_hook_type prev_fmgr_hook = nullptr;

static void guard_fmgr_hook(FmgrHookEventType event, FmgrInfo *flinfo, Datum *arg) {
	boundary([&] {
		if (prev_fmgr_hook)
			prev_fmgr_hook(event, flinfo, arg);
		if (event != FHET_START || creating_extension || !IsTransactionState())
			return;
		Oid fnsp = get_func_namespace(flinfo->fn_oid);
		if (!OidIsValid(fnsp))
			return;
		if (trusted && fnsp != trusted_nsp)
			return; // not ours (the usual case for other extensions' functions: no catalog access)
		if (!trusted && fnsp != extension_namespace())
			return; // not ours, or no pg_outbox in this database
		(void)check_trusted_schema();
	});
}

void install_schema_guard(void) {
	prev_fmgr_hook = fmgr_hook;
	fmgr_hook = guard_fmgr_hook;
}

} // namespace pg_outbox
