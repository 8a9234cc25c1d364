// limits.hpp — the limits of pg_outbox, each defined once, with the one wording of the error that
// enforces it. Pure C++ (no Postgres header): used by the module (limits.cpp raises the errors),
// by the listener (src/listen) and, through a build-time substitution, by the SQL pieces: the
// Makefile replaces @MAX_CHANNEL_BYTES@ and @MAX_PAYLOAD_BYTES@ in src/sql/*.sql and
// src/sql/upgrade/*.sql with the numbers defined here (a table CHECK stays a plain
// octet_length() comparison: no function call per row, no privilege to grant). The module
// static_asserts that the numbers match the server it is built for (pg_outbox.hpp).
#pragma once

#ifdef POSTGRES_H
#error "limits.hpp is pure C++: include it before (or without) any Postgres header"
#endif

#include <cstddef>
#include <string_view>

// NOTIFY's limits on PostgreSQL with the default 8 kB block: a payload must be shorter than
// NOTIFY_PAYLOAD_MAX_LENGTH = BLCKSZ - NAMEDATALEN - 128 = 8000 bytes; a channel name shorter
// than NAMEDATALEN = 64 bytes. (Macros, so that the messages below can spell the numbers, and
// the Makefile can read them.)
#define PGO_MAX_PAYLOAD_BYTES 7999
#define PGO_MAX_CHANNEL_BYTES 63
#define PGO_STR_(x) #x
#define PGO_STR(x) PGO_STR_(x)

namespace pg_outbox {

constexpr std::size_t kMaxPayloadBytes = PGO_MAX_PAYLOAD_BYTES;
constexpr std::size_t kMaxChannelBytes = PGO_MAX_CHANNEL_BYTES;

// ---- the channel rule: 1 to 63 bytes (bytes of the server encoding, not characters) ----
enum class ChannelCheck { Ok, Empty, TooLong };
inline ChannelCheck check_channel(std::string_view channel) noexcept {
	if (channel.empty())
		return ChannelCheck::Empty;
	if (channel.size() > kMaxChannelBytes)
		return ChannelCheck::TooLong;
	return ChannelCheck::Ok;
}
// Its error (SQLSTATE 22023, invalid_parameter_value). %s: what is checked ("channel name",
// "channel name in channels"); %zu: the length in bytes; %.*s: the channel's first characters.
namespace msg {
constexpr const char *kChannelEmpty = "%s cannot be empty";
constexpr const char *kChannelEmptyHint = "A channel name is 1 to " PGO_STR(PGO_MAX_CHANNEL_BYTES) " bytes long.";
constexpr const char *kChannelTooLong = "%s is too long: %zu bytes, the limit is " PGO_STR(PGO_MAX_CHANNEL_BYTES) " bytes";
constexpr const char *kChannelTooLongDetail = "Channel \"%.*s...\" is %zu bytes long.";
constexpr const char *kChannelTooLongHint =
    "Use a shorter channel name; NOTIFY channel names are at most " PGO_STR(PGO_MAX_CHANNEL_BYTES)
    " bytes (NAMEDATALEN - 1), counted in bytes, not characters.";
// The detail shows at most this many bytes of the channel (cut at a character boundary).
constexpr int kChannelDetailBytes = 40;

// ---- the payload rule of outbox.notify(): at most 7999 bytes ----
constexpr const char *kPayloadTooLong = "payload is too long: %zu bytes, the limit is " PGO_STR(PGO_MAX_PAYLOAD_BYTES) " bytes";
constexpr const char *kPayloadTooLongDetail =
    "A NOTIFY payload must be shorter than %d bytes; sizes are counted in bytes of the server encoding.";
} // namespace msg

} // namespace pg_outbox
