// Conversions between JS values and the core's C++ types, shared by the bindings.
#pragma once
#include <napi.h>

#include <string>

#include "../core/backend.h"
#include "../core/model.h"

namespace tl::napi {

// Throws a JS error whose message "[E_CODE] …" src/errors.ts turns into a TernlabError.
inline void throw_status(Napi::Env env, const Status& s) { throw Napi::Error::New(env, s.formatted()); }
inline void check(Napi::Env env, const Status& s) {
  if (!s.is_ok()) throw_status(env, s);
}
inline Napi::Error option_error(Napi::Env env, const std::string& msg) {
  return Napi::Error::New(env, Status(Code::Option, msg).formatted());
}

inline double num(const Napi::Object& o, const char* key, double dflt) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : dflt;
}
inline int inum(const Napi::Object& o, const char* key, int dflt) { return static_cast<int>(num(o, key, dflt)); }

ActSpec act_spec(const Napi::Object& o);
ConvGeom conv_geom(const Napi::Object& o);
PoolGeom pool_geom(const Napi::Object& o);
Status make_backend(const std::string& kind, int threads, std::unique_ptr<Backend>* out);

}  // namespace tl::napi
