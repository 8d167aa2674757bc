// HTTP/1.x parsing and re-framing for the request-isolating front (src/http/message.hpp), no KVM.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "http/message.hpp"

namespace kvms::http {
namespace {

// Feeds `input` in pieces of `step` bytes; collects events, heads and body bytes.
struct Parsed {
  std::vector<Parser::Event> events;
  std::vector<Head> heads;
  std::string body;
  ParseError error;
  size_t consumed = 0;
};

Parsed parse(Parser& p, const std::string& input, size_t step = 1 << 20, bool eof = false) {
  Parsed r;
  p.body = [&](const char* d, size_t n) { r.body.append(d, n); };
  size_t pos = 0;
  for (;;) {
    const size_t len = std::min(step, input.size() - pos);
    size_t used = 0;
    const Parser::Event e = p.feed(input.data() + pos, len, &used);
    pos += used;
    if (e == Parser::Event::NeedMore) {
      if (pos < input.size()) continue;
      if (eof) {
        const Parser::Event f = p.finish();
        if (f != Parser::Event::NeedMore) r.events.push_back(f);
        if (f == Parser::Event::Error) r.error = p.error();
      }
      break;
    }
    r.events.push_back(e);
    if (e == Parser::Event::Head) r.heads.push_back(p.head());
    if (e == Parser::Event::Error) {
      r.error = p.error();
      break;
    }
  }
  r.consumed = pos;
  return r;
}

using E = Parser::Event;

TEST(HttpParser, RequestWithLengthInSmallPieces) {
  Parser p(Parser::Kind::Request, 64 * 1024);
  Parsed r = parse(p, "POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Y: z \r\n\r\nhello", 3);
  ASSERT_EQ(r.events, (std::vector<E>{E::Head, E::Complete}));
  const Head& h = r.heads[0];
  EXPECT_EQ(h.method, "POST");
  EXPECT_EQ(h.target, "/x?y=1");
  EXPECT_EQ(h.content_length, 5u);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_EQ(*h.find("x-y"), "z ");
  EXPECT_EQ(r.body, "hello");
}

TEST(HttpParser, ChunkedBodyIsDecodedAndPipelinedRequestsComeOneByOne) {
  Parser p(Parser::Kind::Request, 64 * 1024);
  const std::string two = "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                          "GET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
  Parsed r = parse(p, two);
  ASSERT_EQ(r.events, (std::vector<E>{E::Head, E::Complete, E::Head, E::Complete}));
  EXPECT_TRUE(r.heads[0].chunked);
  EXPECT_EQ(r.body, "abcde");
  EXPECT_EQ(r.heads[1].target, "/b");
  EXPECT_FALSE(r.heads[1].keep_alive);
  EXPECT_EQ(r.consumed, two.size());
}

struct Bad {
  const char* name;
  std::string request;
  int status;
};

class HttpParserRejects : public ::testing::TestWithParam<Bad> {};

TEST_P(HttpParserRejects, WithTheRightStatus) {
  Parser p(Parser::Kind::Request, 1024);
  Parsed r = parse(p, GetParam().request);
  ASSERT_FALSE(r.events.empty()) << "accepted: " << GetParam().name;
  EXPECT_EQ(r.events.back(), E::Error) << GetParam().name;
  EXPECT_EQ(r.error.status, GetParam().status) << GetParam().name << ": " << r.error.reason;
  EXPECT_TRUE(r.heads.empty()) << GetParam().name << ": a head was accepted";
}

INSTANTIATE_TEST_SUITE_P(
    Smuggling, HttpParserRejects,
    ::testing::Values(
        Bad{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400},
        Bad{"bare LF in a header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400},
        Bad{"CL and TE", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        Bad{"two different CL", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
        Bad{"negative CL", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
        Bad{"huge CL", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
        Bad{"NUL in a header", std::string("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 25), 400},
        Bad{"bad method", "G@T / HTTP/1.1\r\n\r\n", 400},
        Bad{"space in a name", "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
        Bad{"header bomb", "GET / HTTP/1.1\r\n" + std::string(2000, 'a') + ": b\r\n\r\n", 431},
        Bad{"h2c prior knowledge", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
        Bad{"HTTP/2.0 request line", "GET / HTTP/2.0\r\n\r\n", 505},
        Bad{"HTTP/1.9", "GET / HTTP/1.9\r\n\r\n", 505}),
    [](const auto& info) {
      std::string n = info.param.name;
      for (char& c : n)
        if (!isalnum(static_cast<unsigned char>(c))) c = '_';
      return n;
    });

TEST(HttpParser, CutShortRequestIsAnErrorAtTheEnd) {
  Parser p(Parser::Kind::Request, 1024);
  Parsed r = parse(p, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1 << 20, true);
  ASSERT_EQ(r.events.back(), E::Error);
  Parser idle(Parser::Kind::Request, 1024);
  Parsed none = parse(idle, "", 1, true);
  EXPECT_TRUE(none.events.empty());  // closed between requests: nothing wrong
}

TEST(HttpParser, UpgradeAndConnectStopAfterTheHead) {
  Parser p(Parser::Kind::Request, 1024);
  const std::string ws = "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nraw bytes";
  Parsed r = parse(p, ws);
  ASSERT_GE(r.events.size(), 1u);
  EXPECT_EQ(r.events[0], E::Head);
  EXPECT_TRUE(r.heads[0].upgrade);
  EXPECT_EQ(ws.substr(r.consumed), "raw bytes");
  Parser c(Parser::Kind::Request, 1024);
  Parsed cr = parse(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
  ASSERT_FALSE(cr.heads.empty());
  EXPECT_TRUE(cr.heads[0].upgrade);
  EXPECT_EQ(cr.heads[0].target, "example.com:443");
}

TEST(HttpParser, Responses) {
  {  // close-delimited: complete only when the guest closes
    Parser p(Parser::Kind::Response, 1024);
    Parsed r = parse(p, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome body", 4, true);
    ASSERT_EQ(r.events, (std::vector<E>{E::Head, E::Complete}));
    EXPECT_EQ(r.body, "some body");
  }
  {  // HEAD: no body whatever Content-Length says
    Parser p(Parser::Kind::Response, 1024);
    p.expect_no_body(true);
    Parsed r = parse(p, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    ASSERT_EQ(r.events, (std::vector<E>{E::Head, E::Complete}));
    EXPECT_FALSE(p.close_delimited());
  }
  {  // 103 then 200, 204 and 304 have no body
    Parser p(Parser::Kind::Response, 1024);
    Parsed r = parse(p, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n");
    ASSERT_EQ(r.events, (std::vector<E>{E::Head, E::Complete, E::Head, E::Complete, E::Head, E::Complete}));
    EXPECT_EQ(r.heads[0].status, 103);
    EXPECT_EQ(r.heads[2].status, 304);
  }
  {  // garbage from a guest: 502
    Parser p(Parser::Kind::Response, 1024);
    Parsed r = parse(p, "this is not http\r\n\r\n");
    ASSERT_EQ(r.events.back(), E::Error);
    EXPECT_EQ(r.error.status, 502);
  }
}

TEST(HttpMessage, RequestToGuestReplacesFramingAndHopByHopHeaders) {
  Parser p(Parser::Kind::Request, 1024);
  Parsed r = parse(p, "POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
                   "Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nX-Keep: 2\r\n\r\n");
  ASSERT_FALSE(r.heads.empty());
  const std::string out = request_to_guest(r.heads[0], "Transfer-Encoding: chunked");
  EXPECT_EQ(out, "POST /x HTTP/1.1\r\nHost: a\r\nX-Keep: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
}

TEST(HttpMessage, ResponseToClient) {
  Head h;
  h.status = 200;
  h.reason = "OK";
  h.headers = {{"Content-Type", "text/plain"}, {"Connection", "close"}, {"Content-Length", "3"}};
  EXPECT_EQ(response_to_client(h, "Transfer-Encoding: chunked", true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(chunk_header(26), "1a\r\n");
  EXPECT_NE(error_response(431, true).find("HTTP/1.1 431 Request Header Fields Too Large\r\n"), std::string::npos);
}

}  // namespace
}  // namespace kvms::http
