/* fpu: SSE/AVX state in the guest. libc string functions on large buffers (glibc picks its
 * AVX2/EVEX variants when CPUID and XCR0 allow), explicit SSE2 and AVX2 code, vector registers and
 * MXCSR surviving a syscall, x87 long double, setjmp/longjmp, libm and floating-point environment.
 *
 * Usage: fpu */
#include "check.h"

#include <cpuid.h>
#include <emmintrin.h>
#include <fenv.h>
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>

static int have_avx, have_avx2, have_avx512;

static uint64_t xgetbv0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

static void detect(void) {
  unsigned a, b, c, d;
  CHECK(__get_cpuid(1, &a, &b, &c, &d));
  CHECK(d & bit_SSE2); /* part of x86-64 */
  int osxsave = (c & bit_OSXSAVE) != 0;
  uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  if (osxsave) CHECK((xcr0 & 3) == 3); /* x87 and SSE state always enabled */
  have_avx = osxsave && (c & bit_AVX) && (xcr0 & 6) == 6;
  if (__get_cpuid_max(0, NULL) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    have_avx2 = have_avx && (b & bit_AVX2);
    have_avx512 = have_avx && (b & bit_AVX512F) && (xcr0 & 0xe6) == 0xe6;
  }
}

/* ---- libc string functions over big buffers and every alignment ---- */

static void test_strings(void) {
  size_t n = 1 << 20;
  unsigned char *a = malloc(n + 128), *b = malloc(n + 128);
  CHECK(a && b);
  for (size_t i = 0; i < n + 128; i++) a[i] = (unsigned char)(i * 7 + (i >> 11));
  for (int align = 0; align < 64; align += 7) {
    for (size_t len = 0; len < 600; len += 37) {
      memset(b, 0xee, len + 128);
      memcpy(b + align, a + (63 - align), len);
      CHECK(memcmp(b + align, a + (63 - align), len) == 0);
      CHECK(b[align + len] == 0xee);
      if (align) CHECK(b[align - 1] == 0xee);
    }
  }
  memcpy(b, a, n);
  CHECK(memcmp(a, b, n) == 0);
  b[n - 1] ^= 1;
  CHECK(memcmp(a, b, n) < 0 || memcmp(a, b, n) > 0);
  CHECK((memcmp(a, b, n) < 0) == (a[n - 1] < b[n - 1]));
  b[n - 1] ^= 1;
  b[n / 2 + 3] ^= 0x80;
  CHECK(memcmp(a, b, n) != 0);
  CHECK(memcmp(a, b, n / 2 + 3) == 0);

  /* Overlapping moves in both directions. */
  for (size_t i = 0; i < n; i++) b[i] = (unsigned char)i;
  memmove(b + 33, b, n - 64);
  for (size_t i = 0; i < n - 64; i += 997) CHECK(b[i + 33] == (unsigned char)i);
  for (size_t i = 0; i < n; i++) b[i] = (unsigned char)i;
  memmove(b, b + 65, n - 65);
  for (size_t i = 0; i < n - 65; i += 991) CHECK(b[i] == (unsigned char)(i + 65));

  memset(b + 3, 'x', n - 10);
  for (size_t i = 3; i < n - 7; i += 4093) CHECK(b[i] == 'x');
  CHECK(b[n - 7] != 'x' || b[n - 7] == (unsigned char)(n - 7 + 65));

  /* strlen/memchr/strchr/strcmp/strrchr on a 1 MB string. */
  char *s = (char *)b;
  memset(s, 'a', n - 1);
  s[n - 1] = 0;
  for (int off = 0; off < 64; off++) CHECK(strlen(s + off) == n - 1 - off);
  s[n / 3] = 'Q';
  CHECK(memchr(s, 'Q', n) == s + n / 3);
  CHECK(strchr(s + 1, 'Q') == s + n / 3);
  CHECK(strrchr(s, 'Q') == s + n / 3);
  CHECK(memchr(s, 'Z', n) == NULL);
  CHECK(memrchr(s, 'Q', n) == s + n / 3);
  char *t = strdup(s);
  CHECK(t && strcmp(s, t) == 0);
  t[n - 2] = 'b';
  CHECK(strcmp(s, t) < 0);
  CHECK(strncmp(s, t, n - 2) == 0);
  CHECK(strstr(s, "aQa") == s + n / 3 - 1);
  free(t);
  free(a);
  free(b);
}

/* ---- explicit SIMD ---- */

static int64_t sum_scalar(const int32_t *v, size_t n) {
  int64_t s = 0;
  for (size_t i = 0; i < n; i++) s += v[i];
  return s;
}

static int64_t sum_sse2(const int32_t *v, size_t n) {
  __m128i acc_lo = _mm_setzero_si128(), acc_hi = _mm_setzero_si128();
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    __m128i x = _mm_loadu_si128((const __m128i *)(v + i));
    __m128i sign = _mm_srai_epi32(x, 31);
    acc_lo = _mm_add_epi64(acc_lo, _mm_unpacklo_epi32(x, sign));
    acc_hi = _mm_add_epi64(acc_hi, _mm_unpackhi_epi32(x, sign));
  }
  int64_t out[2];
  _mm_storeu_si128((__m128i *)out, _mm_add_epi64(acc_lo, acc_hi));
  int64_t s = out[0] + out[1];
  for (; i < n; i++) s += v[i];
  return s;
}

__attribute__((target("avx2"))) static int64_t sum_avx2(const int32_t *v, size_t n) {
  __m256i acc = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    acc = _mm256_add_epi64(acc, _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(v + i))));
  int64_t out[4];
  _mm256_storeu_si256((__m256i *)out, acc);
  int64_t s = out[0] + out[1] + out[2] + out[3];
  for (; i < n; i++) s += v[i];
  return s;
}

__attribute__((target("avx2,fma"), noinline)) static double dot_avx(const double *a, const double *b, size_t n) {
  __m256d acc = _mm256_setzero_pd();
  size_t i = 0;
  for (; i + 4 <= n; i += 4) acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_loadu_pd(a + i), _mm256_loadu_pd(b + i)));
  double out[4];
  _mm256_storeu_pd(out, acc);
  double s = out[0] + out[1] + out[2] + out[3];
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

static void test_simd(void) {
  size_t n = 100003;
  int32_t *v = malloc(n * sizeof *v);
  CHECK(v);
  for (size_t i = 0; i < n; i++) v[i] = (int32_t)((i * 2654435761u) ^ 0x5bd1e995u);
  int64_t want = sum_scalar(v, n);
  CHECK(sum_sse2(v, n) == want);
  if (have_avx2) CHECK(sum_avx2(v, n) == want);
  free(v);

  double a[1000], b[1000], ref = 0;
  for (int i = 0; i < 1000; i++) {
    a[i] = i * 0.5;
    b[i] = 2.0;
    ref += a[i] * b[i];
  }
  volatile size_t len = 1000;
  if (have_avx2) CHECK(dot_avx(a, b, len) == ref); /* exact: small integers */
  __m128d x = _mm_set_pd(4.0, 9.0);
  double r[2];
  _mm_storeu_pd(r, _mm_sqrt_pd(x));
  CHECK(r[0] == 3.0 && r[1] == 2.0);
}

/* ---- vector registers across a syscall ---- */

/* Loads xmm0-15 from in[16][16], calls getpid, stores them to out. */
void xmm_across_syscall(const void *in, void *out);
__asm__(".text\n.globl xmm_across_syscall\n.type xmm_across_syscall, @function\n"
        "xmm_across_syscall:\n"
        "  mov %rsi, %r8\n"
        "  movdqu 0(%rdi), %xmm0\n  movdqu 16(%rdi), %xmm1\n  movdqu 32(%rdi), %xmm2\n"
        "  movdqu 48(%rdi), %xmm3\n  movdqu 64(%rdi), %xmm4\n  movdqu 80(%rdi), %xmm5\n"
        "  movdqu 96(%rdi), %xmm6\n  movdqu 112(%rdi), %xmm7\n  movdqu 128(%rdi), %xmm8\n"
        "  movdqu 144(%rdi), %xmm9\n  movdqu 160(%rdi), %xmm10\n  movdqu 176(%rdi), %xmm11\n"
        "  movdqu 192(%rdi), %xmm12\n  movdqu 208(%rdi), %xmm13\n  movdqu 224(%rdi), %xmm14\n"
        "  movdqu 240(%rdi), %xmm15\n"
        "  mov $39, %eax\n  syscall\n"
        "  movdqu %xmm0, 0(%r8)\n  movdqu %xmm1, 16(%r8)\n  movdqu %xmm2, 32(%r8)\n"
        "  movdqu %xmm3, 48(%r8)\n  movdqu %xmm4, 64(%r8)\n  movdqu %xmm5, 80(%r8)\n"
        "  movdqu %xmm6, 96(%r8)\n  movdqu %xmm7, 112(%r8)\n  movdqu %xmm8, 128(%r8)\n"
        "  movdqu %xmm9, 144(%r8)\n  movdqu %xmm10, 160(%r8)\n  movdqu %xmm11, 176(%r8)\n"
        "  movdqu %xmm12, 192(%r8)\n  movdqu %xmm13, 208(%r8)\n  movdqu %xmm14, 224(%r8)\n"
        "  movdqu %xmm15, 240(%r8)\n"
        "  ret\n.size xmm_across_syscall, .-xmm_across_syscall\n");

/* Same with ymm0-15 (32 bytes each); only called when AVX is usable. */
void ymm_across_syscall(const void *in, void *out);
__asm__(".text\n.globl ymm_across_syscall\n.type ymm_across_syscall, @function\n"
        "ymm_across_syscall:\n"
        "  mov %rsi, %r8\n"
        "  vmovdqu 0(%rdi), %ymm0\n  vmovdqu 32(%rdi), %ymm1\n  vmovdqu 64(%rdi), %ymm2\n"
        "  vmovdqu 96(%rdi), %ymm3\n  vmovdqu 128(%rdi), %ymm4\n  vmovdqu 160(%rdi), %ymm5\n"
        "  vmovdqu 192(%rdi), %ymm6\n  vmovdqu 224(%rdi), %ymm7\n  vmovdqu 256(%rdi), %ymm8\n"
        "  vmovdqu 288(%rdi), %ymm9\n  vmovdqu 320(%rdi), %ymm10\n  vmovdqu 352(%rdi), %ymm11\n"
        "  vmovdqu 384(%rdi), %ymm12\n  vmovdqu 416(%rdi), %ymm13\n  vmovdqu 448(%rdi), %ymm14\n"
        "  vmovdqu 480(%rdi), %ymm15\n"
        "  mov $39, %eax\n  syscall\n"
        "  vmovdqu %ymm0, 0(%r8)\n  vmovdqu %ymm1, 32(%r8)\n  vmovdqu %ymm2, 64(%r8)\n"
        "  vmovdqu %ymm3, 96(%r8)\n  vmovdqu %ymm4, 128(%r8)\n  vmovdqu %ymm5, 160(%r8)\n"
        "  vmovdqu %ymm6, 192(%r8)\n  vmovdqu %ymm7, 224(%r8)\n  vmovdqu %ymm8, 256(%r8)\n"
        "  vmovdqu %ymm9, 288(%r8)\n  vmovdqu %ymm10, 320(%r8)\n  vmovdqu %ymm11, 352(%r8)\n"
        "  vmovdqu %ymm12, 384(%r8)\n  vmovdqu %ymm13, 416(%r8)\n  vmovdqu %ymm14, 448(%r8)\n"
        "  vmovdqu %ymm15, 480(%r8)\n"
        "  vzeroupper\n  ret\n.size ymm_across_syscall, .-ymm_across_syscall\n");

/* zmm16/zmm31 and k1 with AVX-512 (only called when usable). */
void zmm_across_syscall(const void *in, void *out);
__asm__(".text\n.globl zmm_across_syscall\n.type zmm_across_syscall, @function\n"
        "zmm_across_syscall:\n"
        "  mov %rsi, %r8\n"
        "  vmovdqu64 0(%rdi), %zmm16\n  vmovdqu64 64(%rdi), %zmm31\n  vmovdqu64 128(%rdi), %zmm7\n"
        "  kmovw 192(%rdi), %k1\n"
        "  mov $39, %eax\n  syscall\n"
        "  vmovdqu64 %zmm16, 0(%r8)\n  vmovdqu64 %zmm31, 64(%r8)\n  vmovdqu64 %zmm7, 128(%r8)\n"
        "  kmovw %k1, 192(%r8)\n"
        "  vzeroupper\n  ret\n.size zmm_across_syscall, .-zmm_across_syscall\n");

static void test_regs_across_syscall(void) {
  unsigned char in[512], out[512];
  for (int round = 0; round < 50; round++) {
    for (int i = 0; i < 512; i++) in[i] = (unsigned char)(i * 31 + round * 7 + 1);
    memset(out, 0, sizeof out);
    xmm_across_syscall(in, out);
    CHECK(memcmp(in, out, 256) == 0);
    if (have_avx) {
      memset(out, 0, sizeof out);
      ymm_across_syscall(in, out);
      CHECK(memcmp(in, out, 512) == 0);
    }
    if (have_avx512) {
      memset(out, 0, sizeof out);
      zmm_across_syscall(in, out);
      CHECK(memcmp(in, out, 194) == 0);
    }
  }
  /* MXCSR and the x87 control word (rounding mode) survive syscalls too. */
  CHECK(fesetround(FE_UPWARD) == 0);
  CHECK(getpid() > 0);
  CHECK(fegetround() == FE_UPWARD);
  uint32_t mxcsr;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  CHECK(((mxcsr >> 13) & 3) == 2); /* RC = round up */
  uint16_t cw;
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  CHECK(((cw >> 10) & 3) == 2);
  CHECK(fesetround(FE_TONEAREST) == 0);
}

/* ---- x87 long double ---- */

static void test_long_double(void) {
  CHECK(LDBL_MANT_DIG == 64);
  CHECK(sizeof(long double) == 16);
  volatile long double one = 1.0L, tiny = 0x1p-63L;
  CHECK(one + tiny != one);                  /* 64-bit mantissa */
  CHECK((double)(one + tiny) == 1.0);        /* which double cannot hold */
  volatile long double third = one / 3.0L;
  CHECK(fabsl(third * 3.0L - 1.0L) <= 2 * LDBL_EPSILON);
  volatile long double two = 2.0L;
  long double r = sqrtl(two);
  CHECK(fabsl(r * r - 2.0L) < 1e-18L);
  long double f = 1;
  for (int i = 2; i <= 20; i++) f *= i;
  CHECK(f == 2432902008176640000.0L);
  CHECK((unsigned long long)f == 2432902008176640000ULL);
  CHECK(fabsl(sinl(3.14159265358979323846264338327950288L)) < 1e-18L);
  CHECK(fabsl(expl(1.0L) - 2.71828182845904523536028747135266250L) < 1e-18L);
  char buf[64];
  snprintf(buf, sizeof buf, "%.18Lf", third);
  CHECK(strcmp(buf, "0.333333333333333333") == 0);
  CHECK(strtold("1.000000000000000000108420217248550443", NULL) == one + tiny);
}

/* ---- setjmp/longjmp ---- */

static jmp_buf jb;
static sigjmp_buf sjb;
static int depth_reached;

static void dive(int depth) {
  volatile char pad[256];
  pad[0] = (char)depth;
  depth_reached = depth + pad[0] - (char)depth;
  if (depth == 200) longjmp(jb, depth);
  if (depth < 1000) dive(depth + 1);
  pad[1] = 0; /* not reached */
}

static void test_setjmp(void) {
  volatile int counter = 0;
  volatile double d = 1.5;
  int v = setjmp(jb);
  if (v == 0) {
    counter = 1;
    d = 2.5;
    dive(0);
    CHECK(0); /* dive never returns */
  }
  CHECK(v == 200);
  CHECK(counter == 1 && d == 2.5);
  CHECK(depth_reached == 200);

  /* Jumps that pass 0 become 1. */
  volatile int times = 0;
  if (setjmp(jb) == 0) longjmp(jb, 0);
  else times++;
  CHECK(times == 1);

  /* sigsetjmp with savemask restores the signal mask. */
  sigset_t set, cur;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  if (sigsetjmp(sjb, 1) == 0) {
    CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
    siglongjmp(sjb, 7);
  }
  CHECK(sigprocmask(SIG_BLOCK, NULL, &cur) == 0);
  CHECK(sigismember(&cur, SIGUSR1) == 0);
}

/* ---- libm and the floating-point environment ---- */

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol * (fabs(b) > 1 ? fabs(b) : 1); }

static void test_math(void) {
  volatile double x = 0.5, y = 2.0, z = -1.0, zero = 0.0;
  CHECK(close_to(sin(x), 0.479425538604203, 1e-14));
  CHECK(close_to(cos(x), 0.8775825618903728, 1e-14));
  CHECK(close_to(tan(x), 0.5463024898437905, 1e-14));
  CHECK(close_to(exp(y), 7.38905609893065, 1e-14));
  CHECK(close_to(log(y), 0.6931471805599453, 1e-14));
  CHECK(close_to(pow(y, 0.5), 1.4142135623730951, 1e-15));
  CHECK(close_to(atan2(1.0, z), 2.356194490192345, 1e-15));
  CHECK(close_to(cbrt(27.0 * x * y), 3.0, 1e-15));
  CHECK(sqrt(y * y) == 2.0);
  CHECK(fma(y, y, z) == 3.0);
  CHECK(close_to(sinf((float)x), 0.47942554f, 1e-6));
  CHECK(close_to(expf((float)y), 7.389056f, 1e-6));
  CHECK(close_to(hypot(3.0, 4.0 * x * y), 5.0, 1e-15));
  CHECK(floor(-x) == -1.0 && ceil(-x) == -0.0 && round(x) == 1.0 && trunc(-1.7) == -1.0);
  CHECK(lrint(2.5) == 2 && lrint(3.5) == 4); /* round half to even */

  /* Exceptions are flagged, not trapped. */
  CHECK(feclearexcept(FE_ALL_EXCEPT) == 0);
  volatile double inf = 1.0 / zero;
  CHECK(isinf(inf) && inf > 0);
  CHECK(fetestexcept(FE_DIVBYZERO));
  volatile double nan = sqrt(z);
  CHECK(isnan(nan));
  CHECK(fetestexcept(FE_INVALID));
  volatile double big = DBL_MAX;
  volatile double over = big * y;
  CHECK(isinf(over) && fetestexcept(FE_OVERFLOW));
  /* Subnormals are not flushed to zero. */
  volatile double sub = DBL_MIN / 4;
  CHECK(sub > 0 && sub * 4 == DBL_MIN);
  CHECK(fpclassify(sub) == FP_SUBNORMAL);

  /* Rounding modes change results in both SSE and x87. */
  volatile double one = 1.0, three = 3.0;
  CHECK(fesetround(FE_DOWNWARD) == 0);
  double down = one / three;
  volatile long double ldown = (long double)one / three;
  CHECK(fesetround(FE_UPWARD) == 0);
  double up = one / three;
  volatile long double lup = (long double)one / three;
  CHECK(fesetround(FE_TONEAREST) == 0);
  CHECK(down < up);
  CHECK(nextafter(down, 1.0) == up);
  CHECK(ldown < lup);
  CHECK(rint(2.5) == 2.0);
  CHECK(fesetround(FE_TOWARDZERO) == 0);
  CHECK(rint(-2.7) == -2.0);
  CHECK(fesetround(FE_TONEAREST) == 0);
  CHECK(feclearexcept(FE_ALL_EXCEPT) == 0);

  /* Formatting and parsing doubles (uses SSE heavily in glibc). */
  char buf[64];
  snprintf(buf, sizeof buf, "%.17g", 0.1);
  CHECK(strcmp(buf, "0.10000000000000001") == 0);
  CHECK(strtod("2.5e-3", NULL) == 0.0025);
  snprintf(buf, sizeof buf, "%a", 1.0);
  CHECK(strcmp(buf, "0x1p+0") == 0);
}

int main(void) {
  detect();
  test_strings();
  test_simd();
  test_regs_across_syscall();
  test_long_double();
  test_setjmp();
  test_math();
  guest_ok("fpu");
  return 0;
}
