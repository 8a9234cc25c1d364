// json_impl.cpp — compiles Boost.JSON's implementation into the extension (header-only
// mode), so the module needs no libboost_json shared library at run time.
//
// GCC 14/15 with Boost 1.92 (Debian forky, with PostgreSQL 18) report -Wmaybe-uninitialized
// inside Boost.JSON's string_impl when it is inlined at -O1 (the unit tests' build): a false
// positive in Boost's own code (the short-string and key cases of one union), silenced here
// only, so that the build stays warning-free.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/json/src.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
