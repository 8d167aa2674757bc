#include "http/message.hpp"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cctype>
#include <cstring>
#include <regex>

namespace kvms::http {
namespace {

Parser* self(http_parser* p) { return static_cast<Parser*>(p->data); }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Headers that describe one connection, not the message (RFC 9110 7.6.1), and the framing headers
// kvmserver always writes itself.
bool hop_by_hop(std::string_view name) {
  for (const char* h : {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "content-length", "upgrade", "expect"})
    if (same_name(name, h)) return true;
  return false;
}

// Whether a header must not be passed on: hop-by-hop, or named by the Connection header.
bool dropped(const Head& h, std::string_view name, bool keep_upgrade) {
  if (keep_upgrade && same_name(name, "upgrade")) return false;
  return hop_by_hop(name) || h.has_token("connection", name);
}

}  // namespace

bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

const std::string* Head::find(std::string_view name) const {
  for (const auto& h : headers)
    if (same_name(h.name, name)) return &h.value;
  return nullptr;
}

bool Head::has_token(std::string_view name, std::string_view token) const {
  for (const auto& h : headers) {
    if (!same_name(h.name, name)) continue;
    std::string_view v = h.value;
    while (!v.empty()) {
      const size_t comma = v.find(',');
      if (same_name(trim(v.substr(0, comma)), token)) return true;
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return false;
}

Parser::Parser(Kind kind, size_t max_head) : kind_(kind), max_head_(max_head) {
  http_parser_init(&parser_, kind == Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE);
  parser_.data = this;
  settings_.on_message_begin = on_message_begin;
  settings_.on_url = on_url;
  settings_.on_status = on_status;
  settings_.on_header_field = on_header_field;
  settings_.on_header_value = on_header_value;
  settings_.on_headers_complete = on_headers_complete;
  settings_.on_body = on_body;
  settings_.on_message_complete = on_message_complete;
}

int Parser::on_message_begin(http_parser* p) {
  Parser& s = *self(p);
  s.head_ = {};
  s.in_head_ = true;
  s.head_done_ = s.message_done_ = false;
  s.field_next_ = true;
  return 0;
}

int Parser::on_url(http_parser* p, const char* at, size_t len) {
  self(p)->head_.target.append(at, len);
  return 0;
}

int Parser::on_status(http_parser* p, const char* at, size_t len) {
  self(p)->head_.reason.append(at, len);
  return 0;
}

int Parser::on_header_field(http_parser* p, const char* at, size_t len) {
  Parser& s = *self(p);
  if (s.field_next_) {
    s.head_.headers.push_back({});
    s.field_next_ = false;
  }
  s.head_.headers.back().name.append(at, len);
  return 0;
}

int Parser::on_header_value(http_parser* p, const char* at, size_t len) {
  Parser& s = *self(p);
  if (s.head_.headers.empty()) s.head_.headers.push_back({});
  s.head_.headers.back().value.append(at, len);
  s.field_next_ = true;
  return 0;
}

// RFC 9110 5.6.2 token characters: what a header name is made of.
static bool is_token(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name)
    if (!(std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c))) return false;
  return true;
}

int Parser::on_headers_complete(http_parser* p) {
  Parser& s = *self(p);
  Head& h = s.head_;
  for (const auto& hd : h.headers)
    if (!is_token(hd.name)) {  // the parser is lenient about names; a guest must never see these
      s.error_.reason = "a header name that is not a token";
      return -1;
    }
  h.major = p->http_major;
  h.minor = p->http_minor;
  if (s.kind_ == Kind::Request) {
    h.method = http_method_str(static_cast<http_method>(p->method));
  } else {
    h.status = int(p->status_code);
  }
  h.chunked = (p->flags & F_CHUNKED) != 0;
  if (p->content_length != ULLONG_MAX) h.content_length = p->content_length;
  h.keep_alive = http_should_keep_alive(p) != 0;
  h.upgrade = s.kind_ == Kind::Request && p->upgrade;
  s.in_head_ = false;
  s.head_done_ = true;
  // A message that has a body stops here so the caller can act on the head before it comes; one
  // without goes on to its end (it is complete with the head).
  bool skip_body = false;
  if (s.kind_ == Kind::Response)
    skip_body = s.no_body_ || h.status / 100 == 1 || h.status == 204 || h.status == 304;
  const bool has_body = !skip_body && !p->upgrade &&
                        (h.chunked || (h.content_length && *h.content_length > 0) ||
                         (s.kind_ == Kind::Response && !h.content_length));
  if (has_body) http_parser_pause(p, 1);
  return skip_body ? 1 : 0;
}

int Parser::on_body(http_parser* p, const char* at, size_t len) {
  Parser& s = *self(p);
  if (s.body) s.body(at, len);
  return 0;
}

int Parser::on_message_complete(http_parser* p) {
  Parser& s = *self(p);
  s.message_done_ = true;
  http_parser_pause(p, 1);
  return 0;
}

// A well-formed version we do not speak ("HTTP/2.0") is 505; anything else in its place (nothing,
// as in HTTP/0.9, or garbage) is a malformed request: 400.
Parser::Event Parser::fail_version() {
  static const std::regex kVersion(R"(^\S+ \S+ HTTP/[0-9]\.[0-9]\r?\n$)");
  if (kind_ == Kind::Request && std::regex_match(first_line_, kVersion)) return fail(505, "HTTP version not supported");
  return fail(400, "malformed or missing HTTP version");
}

Parser::Event Parser::fail(int status, std::string reason) {
  failed_ = true;
  error_ = {kind_ == Kind::Response ? 502 : status, std::move(reason)};
  return Event::Error;
}

bool Parser::check_head_bytes(const char* data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    const unsigned char c = static_cast<unsigned char>(data[i]);
    if (first_line_.find('\n') == std::string::npos && first_line_.size() < 8192) first_line_ += char(c);
    if (c == '\n' && last_byte_ != '\r') {
      error_.reason = "a line ends with a bare LF";
      return false;
    }
    if ((c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c == 0x7f) {
      error_.reason = "a control byte in the head";
      return false;
    }
    last_byte_ = char(c);
  }
  return true;
}

Parser::Event Parser::feed(const char* data, size_t len, size_t* used) {
  *used = 0;
  if (failed_) return Event::Error;
  if (head_done_ && !head_reported_) {
    head_reported_ = true;
    return Event::Head;
  }
  if (message_done_ && !complete_reported_) {
    complete_reported_ = true;
    return Event::Complete;
  }
  if (len == 0) return Event::NeedMore;  // to http_parser, no bytes means end of stream
  if (HTTP_PARSER_ERRNO(&parser_) == HPE_PAUSED) http_parser_pause(&parser_, 0);
  if (message_done_) {  // the next message starts here
    message_done_ = head_done_ = false;
    head_reported_ = complete_reported_ = false;
    head_bytes_ = 0;
    last_byte_ = 0;
    first_line_.clear();
  }
  const bool was_in_head = in_head_;
  const size_t before_head = head_bytes_;
  if (was_in_head && head_bytes_ == 0 && len >= 4 && std::memcmp(data, "PRI ", 4) == 0)
    return fail(505, "HTTP/2 prior knowledge (h2c) is not served");
  const size_t n = http_parser_execute(&parser_, &settings_, data, len);
  *used = n;
  if (was_in_head) {
    // What was consumed while the head was open belongs to it (the parser stops right after it).
    if (!check_head_bytes(data, n)) return fail(400, error_.reason);
    head_bytes_ = before_head + n;
    if (head_bytes_ > max_head_ && !head_done_) return fail(431, "request head larger than --max-header-bytes");
  }
  const http_errno err = HTTP_PARSER_ERRNO(&parser_);
  if (err != HPE_OK && err != HPE_PAUSED) {
    if (err == HPE_CB_headers_complete) return fail(400, error_.reason);
    if (err == HPE_HEADER_OVERFLOW) return fail(431, "head too large");
    if (err == HPE_INVALID_VERSION) return fail_version();
    return fail(400, std::string(http_errno_name(err)) + ": " + http_errno_description(err));
  }
  if (head_done_ && !head_reported_) {
    if (head_.major != 1 || head_.minor > 1) return fail_version();
    if (head_bytes_ > max_head_) return fail(431, "head larger than --max-header-bytes");
    head_reported_ = true;
    return Event::Head;
  }
  if (message_done_ && !complete_reported_) {
    complete_reported_ = true;
    return Event::Complete;
  }
  if (parser_.upgrade && head_done_) {  // stopped after an upgrading head without completing
    complete_reported_ = message_done_ = true;
    return Event::Complete;
  }
  return Event::NeedMore;
}

Parser::Event Parser::finish() {
  if (failed_) return Event::Error;
  if (message_done_ && !complete_reported_) {
    complete_reported_ = true;
    return Event::Complete;
  }
  if (HTTP_PARSER_ERRNO(&parser_) == HPE_PAUSED) http_parser_pause(&parser_, 0);
  const bool was_idle = !head_done_ && head_bytes_ == 0;
  http_parser_execute(&parser_, &settings_, nullptr, 0);
  const http_errno err = HTTP_PARSER_ERRNO(&parser_);
  if (message_done_) {
    complete_reported_ = true;
    return Event::Complete;
  }
  if (was_idle) return Event::NeedMore;  // closed between messages: nothing was cut
  return fail(400, err == HPE_OK || err == HPE_PAUSED ? "connection closed inside a message" : http_errno_description(err));
}

bool Parser::close_delimited() const {
  return kind_ == Kind::Response && head_done_ && !head_.chunked && !head_.content_length && !no_body_ &&
         head_.status / 100 != 1 && head_.status != 204 && head_.status != 304;
}

std::string request_to_guest(const Head& h, const std::string& framing) {
  std::string out = h.method + " " + h.target + " HTTP/1." + std::to_string(h.minor) + "\r\n";
  for (const auto& hd : h.headers) {
    if (dropped(h, hd.name, h.upgrade)) continue;
    out += hd.name + ": " + hd.value + "\r\n";
  }
  if (!framing.empty()) out += framing + "\r\n";
  out += h.upgrade ? "Connection: upgrade\r\n" : "Connection: close\r\n";
  out += "\r\n";
  return out;
}

std::string response_to_client(const Head& h, const std::string& framing, bool keep_alive) {
  std::string out = "HTTP/1.1 " + std::to_string(h.status) + " " + (h.reason.empty() ? reason_phrase(h.status) : h.reason) + "\r\n";
  const bool upgrade = h.status == 101;
  for (const auto& hd : h.headers) {
    if (dropped(h, hd.name, upgrade)) continue;
    out += hd.name + ": " + hd.value + "\r\n";
  }
  if (!framing.empty()) out += framing + "\r\n";
  if (upgrade)
    out += "Connection: upgrade\r\n";
  else
    out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  out += "\r\n";
  return out;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string error_response(int status, bool close) {
  const std::string body = std::to_string(status) + " " + reason_phrase(status) + "\n";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
         "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: " +
         (close ? "close" : "keep-alive") + "\r\n\r\n" + body;
}

std::string chunk_header(size_t len) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%zx\r\n", len);
  return buf;
}

}  // namespace kvms::http
