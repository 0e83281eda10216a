#include "coordinator/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iterator>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "storage/fs_util.h"

namespace sx::coord {
namespace {

// Writes `text` to a new file with mode 0600 (O_EXCL: an existing file is never replaced).
Status write_private(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::unavailable("cannot create " + path + ": " + storage::errno_string(errno));
  const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return Status::unavailable("cannot write " + path + ": " + storage::errno_string(err));
  }
  return Status::ok();
}

StatusOr<nlohmann::json> read_private(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return Status::not_found("no key file " + path + " (" + storage::errno_string(errno) +
                             "). HINT: `sx_coord serve --job DIR` makes the job's keys in DIR; clients need DIR "
                             "(a shared run dir) or --keys FILE");
  if (st.st_mode & 077)
    return Status::invalid_argument(path + " is readable by others (mode " + std::to_string(st.st_mode & 0777) +
                                    " octal " + [&] {
                                      char b[8];
                                      std::snprintf(b, sizeof b, "%03o", unsigned(st.st_mode & 0777));
                                      return std::string(b);
                                    }() + "). HINT: chmod 600 " + path);
  SX_ASSIGN_OR_RETURN(std::string text, storage::read_small_file(path, 4096));
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::data_loss(path + " is not a JSON object");
  return j;
}

StatusOr<std::string> key_field(const nlohmann::json& j, const std::string& path, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string() || it->get<std::string>().size() != 40)
    return Status::data_loss(path + ": key '" + name + "' missing or not a 40-character Z85 key");
  return it->get<std::string>();
}

}  // namespace

std::string server_key_path(const std::string& job_dir) { return storage::join_path(job_dir, "coord_server.key"); }
std::string client_key_path(const std::string& job_dir) { return storage::join_path(job_dir, "coord_client.key"); }

StatusOr<CurveKeys> load_or_create_job_keys(const std::string& job_dir) {
  if (!zmq_has("curve"))
    return Status::unimplemented("this libzmq has no CURVE security (built without libsodium). HINT: install Debian's libzmq5");
  const std::string sp = server_key_path(job_dir), cp = client_key_path(job_dir);
  if (::access(sp.c_str(), F_OK) != 0 && ::access(cp.c_str(), F_OK) != 0) {
    char spub[41], ssec[41], cpub[41], csec[41];
    if (zmq_curve_keypair(spub, ssec) != 0 || zmq_curve_keypair(cpub, csec) != 0)
      return Status::internal(std::string("zmq_curve_keypair: ") + zmq_strerror(zmq_errno()));
    nlohmann::json s = {{"server_public", spub}, {"server_secret", ssec}, {"client_public", cpub}};
    nlohmann::json c = {{"server_public", spub}, {"client_public", cpub}, {"client_secret", csec}};
    SX_TRY(write_private(sp, s.dump(1) + "\n"));
    SX_TRY(write_private(cp, c.dump(1) + "\n"));
    SX_TRY(storage::fsync_dir(job_dir));
  }
  SX_ASSIGN_OR_RETURN(nlohmann::json s, read_private(sp));
  CurveKeys k;
  SX_ASSIGN_OR_RETURN(k.server_public, key_field(s, sp, "server_public"));
  SX_ASSIGN_OR_RETURN(k.server_secret, key_field(s, sp, "server_secret"));
  SX_ASSIGN_OR_RETURN(k.client_public, key_field(s, sp, "client_public"));
  return k;
}

StatusOr<CurveKeys> read_client_keys(const std::string& job_dir_or_file) {
  struct stat st;
  const bool is_dir = ::stat(job_dir_or_file.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  const std::string path = is_dir ? client_key_path(job_dir_or_file) : job_dir_or_file;
  SX_ASSIGN_OR_RETURN(nlohmann::json j, read_private(path));
  CurveKeys k;
  SX_ASSIGN_OR_RETURN(k.server_public, key_field(j, path, "server_public"));
  SX_ASSIGN_OR_RETURN(k.client_public, key_field(j, path, "client_public"));
  SX_ASSIGN_OR_RETURN(k.client_secret, key_field(j, path, "client_secret"));
  return k;
}

void apply_curve_client(zmq::socket_t& sock, const CurveKeys& keys) {
  sock.set(zmq::sockopt::curve_serverkey, keys.server_public);
  sock.set(zmq::sockopt::curve_publickey, keys.client_public);
  sock.set(zmq::sockopt::curve_secretkey, keys.client_secret);
}

void apply_curve_server(zmq::socket_t& sock, const CurveKeys& keys) {
  sock.set(zmq::sockopt::curve_server, 1);
  sock.set(zmq::sockopt::curve_secretkey, keys.server_secret);
  sock.set(zmq::sockopt::zap_domain, "sxtrain");  // makes libzmq consult the ZAP handler
}

ZapAuthenticator::ZapAuthenticator(zmq::context_t& ctx, std::string allowed_client_public) {
  allowed_.resize(32);
  zmq_z85_decode(reinterpret_cast<uint8_t*>(allowed_.data()), allowed_client_public.c_str());
  sock_ = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::rep);
  sock_->set(zmq::sockopt::linger, 0);
  sock_->bind("inproc://zeromq.zap.01");
}

ZapAuthenticator::~ZapAuthenticator() = default;

void* ZapAuthenticator::handle() const { return sock_->handle(); }

void ZapAuthenticator::serve_pending() {
  for (;;) {
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(*sock_, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
    // version, request id, domain, address, identity, mechanism, credentials...
    const bool well_formed = parts.size() >= 6 && parts[0].to_string() == "1.0";
    const bool ok = well_formed && parts[5].to_string() == "CURVE" && parts.size() >= 7 &&
                    parts[6].to_string() == allowed_;
    if (!ok) ++refused_;
    std::vector<zmq::const_buffer> reply = {zmq::str_buffer("1.0"),
                                            well_formed ? zmq::buffer(parts[1].data(), parts[1].size()) : zmq::const_buffer(),
                                            ok ? zmq::str_buffer("200") : zmq::str_buffer("400"),
                                            ok ? zmq::str_buffer("OK") : zmq::str_buffer("not this job's key"),
                                            zmq::const_buffer(), zmq::const_buffer()};
    (void)zmq::send_multipart(*sock_, reply, zmq::send_flags::dontwait);
  }
}

}  // namespace sx::coord
