/*
 * tls.c -- the TLS engine (see tls.h): OpenSSL over memory BIOs, so that no
 * socket and no event loop is involved here. A context wraps an SSL_CTX with
 * the certificate, key and CA settings (files read once, when it is made); a
 * session wraps one SSL with an input BIO (ciphertext fed by the caller) and
 * an output BIO (ciphertext for the caller to send). Errors are collected
 * from OpenSSL's per-thread queue into the caller's err text, with the
 * certificate verification result when that is what failed.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct sr_tls_ctx_s {
  SSL_CTX *ctx;
  atomic_int refs;
  int server;
  int verify;
};

struct sr_tls_s {
  sr_tls_ctx_t *ctx;
  SSL *ssl;
  BIO *in;  /* ciphertext from the peer (SSL reads it) */
  BIO *out; /* ciphertext for the peer (SSL writes it) */
  int established;
  int failed;
  int closed;
};

/* Appends OpenSSL's queued errors (reason strings) to err after prefix. */
static int tls_error(char *err, size_t errlen, int code, const char *prefix, const SSL *ssl) {
  char reasons[256] = "";
  size_t used = 0;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    const char *r = ERR_reason_error_string(e);
    char tmp[128];
    if (r == NULL) {
      ERR_error_string_n(e, tmp, sizeof tmp);
      r = tmp;
    }
    int n = snprintf(reasons + used, sizeof reasons - used, "%s%s", used ? "; " : "", r);
    if (n < 0 || (size_t)n >= sizeof reasons - used) break;
    used += (size_t)n;
  }
  const char *verify = NULL;
  if (ssl != NULL) {
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK) verify = X509_verify_cert_error_string(vr);
  }
  if (verify)
    return sr_seterr(err, errlen, code, "%s: %s (%s)", prefix, used ? reasons : "error", verify);
  /* what OpenSSL says when the peer does not speak TLS at all */
  const char *hint = strstr(reasons, "wrong version number") || strstr(reasons, "http request") ||
                             strstr(reasons, "packet length too long")
                         ? " (does the peer use TLS?)"
                         : "";
  return sr_seterr(err, errlen, code, "%s: %s%s", prefix, used ? reasons : "unknown error", hint);
}

/* Encrypted private keys are not supported: fail instead of OpenSSL's
 * default of prompting on the terminal (a daemon would hang). */
static int no_password_cb(char *buf, int size, int rwflag, void *ud) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)ud;
  return 0;
}

static int readable_file(const char *path, int dir_ok) {
  struct stat st;
  if (stat(path, &st) != 0) return 0;
  return S_ISREG(st.st_mode) || (dir_ok && S_ISDIR(st.st_mode));
}

int sr_tls_ctx_new(sr_tls_ctx_t **out, const sr_tls_config_t *cfg, char *err, size_t errlen) {
  *out = NULL;
  if (cfg->server && (cfg->certfile == NULL || cfg->certfile[0] == '\0'))
    return sr_seterr(err, errlen, SR_EINVAL, "TLS server needs a certificate file");
  if (cfg->server && cfg->verify_peer && (cfg->cafile == NULL || cfg->cafile[0] == '\0'))
    return sr_seterr(err, errlen, SR_EINVAL,
                     "requiring client certificates needs a CA file to verify them");
  if (cfg->certfile && cfg->certfile[0] && !readable_file(cfg->certfile, 0))
    return sr_seterr(err, errlen, SR_EINVAL, "certificate file not found: %s", cfg->certfile);
  if (cfg->keyfile && cfg->keyfile[0] && !readable_file(cfg->keyfile, 0))
    return sr_seterr(err, errlen, SR_EINVAL, "key file not found: %s", cfg->keyfile);
  if (cfg->cafile && cfg->cafile[0] && !readable_file(cfg->cafile, 1))
    return sr_seterr(err, errlen, SR_EINVAL, "CA file not found: %s", cfg->cafile);
  ERR_clear_error();
  sr_tls_ctx_t *c = calloc(1, sizeof *c);
  if (c == NULL) return sr_seterr(err, errlen, SR_ENOMEM, "out of memory");
  c->server = cfg->server != 0;
  c->verify = cfg->verify_peer != 0;
  atomic_init(&c->refs, 1);
  c->ctx = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
  int rc = 0;
  if (c->ctx == NULL) {
    rc = tls_error(err, errlen, SR_ETLS, "cannot create a TLS context", NULL);
    goto fail;
  }
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  SSL_CTX_set_default_passwd_cb(c->ctx, no_password_cb);
  SSL_CTX_set_mode(c->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (cfg->certfile && cfg->certfile[0]) {
    const char *key = cfg->keyfile && cfg->keyfile[0] ? cfg->keyfile : cfg->certfile;
    if (SSL_CTX_use_certificate_chain_file(c->ctx, cfg->certfile) != 1) {
      char what[600];
      snprintf(what, sizeof what, "cannot load certificate %s", cfg->certfile);
      rc = tls_error(err, errlen, SR_ETLS, what, NULL);
      goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1) {
      char what[600];
      snprintf(what, sizeof what, "cannot load private key %s (encrypted keys are not supported)",
               key);
      rc = tls_error(err, errlen, SR_ETLS, what, NULL);
      goto fail;
    }
    if (SSL_CTX_check_private_key(c->ctx) != 1) {
      rc = tls_error(err, errlen, SR_ETLS, "the private key does not match the certificate", NULL);
      goto fail;
    }
  }
  if (cfg->cafile && cfg->cafile[0]) {
    struct stat st;
    int isdir = stat(cfg->cafile, &st) == 0 && S_ISDIR(st.st_mode);
    if (SSL_CTX_load_verify_locations(c->ctx, isdir ? NULL : cfg->cafile,
                                      isdir ? cfg->cafile : NULL) != 1) {
      char what[600];
      snprintf(what, sizeof what, "cannot load CA certificates %s", cfg->cafile);
      rc = tls_error(err, errlen, SR_ETLS, what, NULL);
      goto fail;
    }
  } else if (!c->server && c->verify) {
    SSL_CTX_set_default_verify_paths(c->ctx);
  }
  if (c->server) {
    SSL_CTX_set_verify(c->ctx,
                       c->verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                 : SSL_VERIFY_NONE,
                       NULL);
  } else {
    SSL_CTX_set_verify(c->ctx, c->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  }
  *out = c;
  return 0;
fail:
  ERR_clear_error();
  if (c->ctx) SSL_CTX_free(c->ctx);
  free(c);
  return rc;
}

sr_tls_ctx_t *sr_tls_ctx_ref(sr_tls_ctx_t *ctx) {
  if (ctx) atomic_fetch_add(&ctx->refs, 1);
  return ctx;
}

void sr_tls_ctx_unref(sr_tls_ctx_t *ctx) {
  if (ctx == NULL) return;
  if (atomic_fetch_sub(&ctx->refs, 1) != 1) return;
  SSL_CTX_free(ctx->ctx);
  free(ctx);
}

int sr_tls_ctx_is_server(const sr_tls_ctx_t *ctx) { return ctx->server; }

int sr_tls_new(sr_tls_t **out, sr_tls_ctx_t *ctx, const char *servername, char *err,
               size_t errlen) {
  *out = NULL;
  ERR_clear_error();
  sr_tls_t *t = calloc(1, sizeof *t);
  if (t == NULL) return sr_seterr(err, errlen, SR_ENOMEM, "out of memory");
  t->ssl = SSL_new(ctx->ctx);
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->in == NULL || t->out == NULL) {
    int rc = tls_error(err, errlen, SR_ENOMEM, "cannot create a TLS session", NULL);
    if (t->ssl) SSL_free(t->ssl);
    BIO_free(t->in);
    BIO_free(t->out);
    free(t);
    return rc;
  }
  BIO_set_mem_eof_return(t->in, -1); /* empty input: "retry", not EOF */
  SSL_set_bio(t->ssl, t->in, t->out); /* the SSL owns both BIOs now */
  if (ctx->server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (servername && servername[0]) {
      unsigned char bin[16];
      int is_ip = inet_pton(AF_INET, servername, bin) == 1 || inet_pton(AF_INET6, servername, bin) == 1;
      if (!is_ip) SSL_set_tlsext_host_name(t->ssl, servername);
      if (ctx->verify) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, servername)
                       : X509_VERIFY_PARAM_set1_host(vp, servername, 0);
        if (ok != 1) {
          int rc = tls_error(err, errlen, SR_ETLS, "cannot set the name to verify", NULL);
          SSL_free(t->ssl);
          free(t);
          return rc;
        }
      }
    }
  }
  t->ctx = sr_tls_ctx_ref(ctx);
  *out = t;
  return 0;
}

void sr_tls_free(sr_tls_t *t) {
  if (t == NULL) return;
  SSL_free(t->ssl);
  sr_tls_ctx_unref(t->ctx);
  free(t);
}

int sr_tls_feed(sr_tls_t *t, const uint8_t *p, size_t n) {
  while (n > 0) {
    int chunk = n > 0x40000000 ? 0x40000000 : (int)n;
    int w = BIO_write(t->in, p, chunk);
    if (w <= 0) return SR_ENOMEM;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int sr_tls_established(const sr_tls_t *t) { return t->established; }

/* Interprets an SSL_* return r. Returns 0 to retry later (wants input), or
 * an error code with err set. */
static int ssl_result(sr_tls_t *t, int r, const char *what, char *err, size_t errlen) {
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  if (e == SSL_ERROR_ZERO_RETURN) {
    t->closed = 1;
    return sr_seterr(err, errlen, SR_ECLOSED, "the peer closed the TLS session");
  }
  t->failed = 1;
  return tls_error(err, errlen, SR_ETLS, what, t->ssl);
}

int sr_tls_handshake(sr_tls_t *t, char *err, size_t errlen) {
  if (t->established) return 1;
  if (t->failed) return sr_seterr(err, errlen, SR_ETLS, "TLS handshake failed earlier");
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->established = 1;
    return 1;
  }
  int rc = ssl_result(t, r, "TLS handshake failed", err, errlen);
  if (rc == SR_ECLOSED) {
    t->failed = 1;
    return sr_seterr(err, errlen, SR_ETLS, "TLS handshake failed: the peer closed the session");
  }
  return rc;
}

int sr_tls_read(sr_tls_t *t, uint8_t *dst, size_t cap, size_t *got, char *err, size_t errlen) {
  *got = 0;
  if (t->closed) return sr_seterr(err, errlen, SR_ECLOSED, "the peer closed the TLS session");
  if (!t->established) {
    int h = sr_tls_handshake(t, err, errlen);
    if (h <= 0) return h;
  }
  if (cap == 0) return 0;
  ERR_clear_error();
  size_t n = 0;
  int r = SSL_read_ex(t->ssl, dst, cap, &n);
  if (r == 1) {
    *got = n;
    return 0;
  }
  return ssl_result(t, 0, "TLS read failed", err, errlen);
}

int sr_tls_write(sr_tls_t *t, const uint8_t *p, size_t n, char *err, size_t errlen) {
  if (!t->established || t->failed || t->closed)
    return sr_seterr(err, errlen, SR_ETLS, "TLS write before the handshake completed");
  ERR_clear_error();
  while (n > 0) {
    size_t w = 0;
    if (SSL_write_ex(t->ssl, p, n, &w) != 1) {
      int rc = ssl_result(t, 0, "TLS write failed", err, errlen);
      return rc == 0 ? sr_seterr(err, errlen, SR_ETLS, "TLS write stalled") : rc;
    }
    p += w;
    n -= w;
  }
  return 0;
}

void sr_tls_close(sr_tls_t *t) {
  if (t == NULL || t->failed || !t->established) return;
  ERR_clear_error();
  (void)SSL_shutdown(t->ssl); /* queues close_notify into the output BIO */
  ERR_clear_error();
}

size_t sr_tls_pending(const sr_tls_t *t) { return BIO_ctrl_pending(t->out); }

int sr_tls_take(sr_tls_t *t, sr_buf_t *out) {
  size_t n = BIO_ctrl_pending(t->out);
  if (n == 0) return 0;
  if (sr_buf_reserve(out, n) < 0) return SR_ENOMEM;
  int r = BIO_read(t->out, out->data + out->len, (int)n);
  if (r > 0) out->len += (size_t)r;
  return 0;
}

size_t sr_tls_take_raw(sr_tls_t *t, uint8_t *dst, size_t cap) {
  size_t n = 0;
  if (cap == 0 || BIO_read_ex(t->out, dst, cap, &n) != 1) return 0;
  return n;
}

void sr_tls_peer_subject(const sr_tls_t *t, char *out, size_t cap) {
  if (cap == 0) return;
  out[0] = '\0';
  X509 *x = SSL_get1_peer_certificate(t->ssl);
  if (x == NULL) return;
  X509_NAME_oneline(X509_get_subject_name(x), out, (int)cap);
  X509_free(x);
}
