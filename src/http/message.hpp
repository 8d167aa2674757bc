#pragma once
// HTTP/1.x messages for the request-isolating front (front.hpp): parsing a stream of requests from
// a client or of responses from a guest, one message at a time, with the body streamed in pieces
// (never buffered whole), and writing heads and bodies back out.
//
// Parsing is libhttp-parser's (Debian's libhttp-parser-dev 2.9), chosen over Boost.Beast because
// its callbacks hand the body over in pieces as it arrives (bounded memory is the point here), it
// parses requests and responses with one small C API, decodes chunked bodies, and rejects the
// smuggling shapes (Content-Length with Transfer-Encoding, differing Content-Lengths) by itself;
// Beast would bring Asio-shaped templates and minutes of compile time to a 2-core CI. What it
// leaves lenient we check on top: bare LF line ends, control bytes in names and values, the size of
// the head.
#include <http_parser.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvms::http {

struct Header {
  std::string name, value;
};

struct Head {
  // Requests
  std::string method;  // "GET", "CONNECT", ...
  std::string target;  // as sent: origin-form "/x?y", absolute-form, authority-form, "*"
  // Responses
  int status = 0;
  std::string reason;

  int major = 1, minor = 1;
  std::vector<Header> headers;
  // Framing, as the parser understood it.
  bool chunked = false;
  std::optional<uint64_t> content_length;
  bool keep_alive = true;  // the sender's wish (HTTP/1.1 default on, 1.0 default off)
  bool upgrade = false;    // a request asking to upgrade (or CONNECT): the rest of the connection is its

  // The first header of that name (case-insensitive), or nullptr.
  const std::string* find(std::string_view name) const;
  // Whether a comma-separated header holds this token (case-insensitive): Connection: close.
  bool has_token(std::string_view name, std::string_view token) const;
  bool is_request() const { return !method.empty(); }
};

// Case-insensitive ASCII comparison of header names and tokens.
bool same_name(std::string_view a, std::string_view b);

// Why a message could not be parsed, as the status to answer a client with (400, 431, 505...).
struct ParseError {
  int status = 400;
  std::string reason;  // one line, for logs
};

class Parser {
 public:
  enum class Kind { Request, Response };
  // max_head: bytes a head may take (431 past it for requests).
  Parser(Kind kind, size_t max_head);
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  enum class Event {
    NeedMore,   // everything given was consumed; feed more
    Head,       // a head is complete: head() holds it; the body follows on the next feeds
    Complete,   // the message (head and body) is complete; the next feed starts the next one
    Error,      // error() says why; the stream is unusable
  };
  // Parses from data; *used is how much of it was consumed (the rest belongs to later calls).
  // Body bytes go to the body sink as they are parsed (decoded from chunked framing).
  Event feed(const char* data, size_t len, size_t* used);
  // The peer closed: completes a close-delimited response (Complete), else NeedMore/Error.
  Event finish();

  // For responses: the request they answer was HEAD (so no body whatever the headers say).
  void expect_no_body(bool on) { no_body_ = on; }
  // Receives body bytes; set before feeding the body.
  std::function<void(const char*, size_t)> body;

  const Head& head() const { return head_; }
  const ParseError& error() const { return error_; }
  // A response whose end is the connection's (no length, not chunked, and it may have a body).
  bool close_delimited() const;
  // The request asked for an upgrade and the parser stopped after its head (see Head::upgrade).
  bool upgraded() const { return parser_.upgrade; }

 private:
  static int on_message_begin(http_parser* p);
  static int on_url(http_parser* p, const char* at, size_t len);
  static int on_status(http_parser* p, const char* at, size_t len);
  static int on_header_field(http_parser* p, const char* at, size_t len);
  static int on_header_value(http_parser* p, const char* at, size_t len);
  static int on_headers_complete(http_parser* p);
  static int on_body(http_parser* p, const char* at, size_t len);
  static int on_message_complete(http_parser* p);
  // Checks the head's raw bytes as they pass: bare LF, NUL and other control bytes, size.
  bool check_head_bytes(const char* data, size_t len);
  Event fail(int status, std::string reason);
  Event fail_version();

  Kind kind_;
  size_t max_head_;
  http_parser parser_{};
  http_parser_settings settings_{};
  Head head_;
  ParseError error_;
  bool in_head_ = true, head_done_ = false, message_done_ = false;
  bool head_reported_ = false, complete_reported_ = false;  // what feed() has returned for this message
  bool field_next_ = true;  // the next header piece starts a new field
  bool no_body_ = false;
  size_t head_bytes_ = 0;
  char last_byte_ = 0;
  std::string first_line_;  // the request or status line so far (to tell 400 from 505)
  bool failed_ = false;
};

// A request head as kvmserver sends it to a guest: the request line and headers re-serialized,
// the client's framing replaced by `framing` (e.g. "Content-Length: 5" or "Transfer-Encoding:
// chunked", or nothing), hop-by-hop headers dropped, "Connection: close" added (one request per
// guest connection), Expect dropped (kvmserver answers 100-continue itself).
std::string request_to_guest(const Head& h, const std::string& framing);
// A response head for the client: status line and headers, hop-by-hop ones replaced by `framing`
// and the Connection header kvmserver decides (keep_alive).
std::string response_to_client(const Head& h, const std::string& framing, bool keep_alive);
// A whole short response kvmserver makes itself (errors: 400, 408, 413, 431, 502, 503, 505).
std::string error_response(int status, bool close);
const char* reason_phrase(int status);

// Chunked transfer coding, for re-framing a body.
std::string chunk_header(size_t len);  // "1a\r\n"
inline constexpr std::string_view kChunkEnd = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace kvms::http
