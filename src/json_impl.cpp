// json_impl.cpp — compiles Boost.JSON's implementation into the extension (header-only
// mode), so the module needs no libboost_json shared library at run time.
#include <boost/json/src.hpp>
