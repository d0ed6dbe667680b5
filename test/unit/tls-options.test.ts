// The transport flags of the CLI (src/cli/options.ts), as pure functions of flags and
// environment: plaintext only when asked for, all three TLS files or none, and TLS to etcd only
// with https:// endpoints and a CA.
import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { checkEtcdTransport, etcdTlsPathsOf, tlsPathsOf } from '../../src/cli/options.js';

const FILES = { tlsCa: 'ca.pem', tlsCert: 'me.pem', tlsKey: 'me.key' };

describe('tlsPathsOf', () => {
  it('without TLS files or --insecure: a usage error that names both ways out', () => {
    expect(() => tlsPathsOf({}, {})).toThrow(InvalidArgumentError);
    expect(() => tlsPathsOf({}, {})).toThrow(/TLS is required: give --tls-ca, --tls-cert and --tls-key .*or --insecure \(or WAL_INSECURE=1\)/);
    expect(() => tlsPathsOf({}, { WAL_INSECURE: '0' })).toThrow(/TLS is required/);
    expect(() => tlsPathsOf({}, { WAL_TLS_CA: '', WAL_TLS_CERT: '', WAL_TLS_KEY: '' })).toThrow(/TLS is required/);
  });

  it('plaintext when asked for: --insecure, or WAL_INSECURE=1 or true', () => {
    expect(tlsPathsOf({ insecure: true }, {})).toBeUndefined();
    expect(tlsPathsOf({}, { WAL_INSECURE: '1' })).toBeUndefined();
    expect(tlsPathsOf({}, { WAL_INSECURE: 'TRUE' })).toBeUndefined();
  });

  it('the three files from flags or variables, flags first', () => {
    expect(tlsPathsOf(FILES, {})).toEqual({ ca: 'ca.pem', cert: 'me.pem', key: 'me.key' });
    expect(tlsPathsOf({}, { WAL_TLS_CA: 'a', WAL_TLS_CERT: 'b', WAL_TLS_KEY: 'c' })).toEqual({ ca: 'a', cert: 'b', key: 'c' });
    expect(tlsPathsOf({ tlsCert: 'flag.pem' }, { WAL_TLS_CA: 'a', WAL_TLS_CERT: 'b', WAL_TLS_KEY: 'c' })).toEqual({ ca: 'a', cert: 'flag.pem', key: 'c' });
  });

  it('a partial set, or files together with --insecure, is a usage error', () => {
    expect(() => tlsPathsOf({ tlsCa: 'ca.pem' }, {})).toThrow(/all three of --tls-ca, --tls-cert and --tls-key/);
    expect(() => tlsPathsOf({ tlsCa: 'ca.pem', insecure: true }, {})).toThrow(/--insecure .*goes without/);
    expect(() => tlsPathsOf(FILES, { WAL_INSECURE: '1' })).toThrow(/--insecure .*goes without/);
  });
});

describe('etcdTlsPathsOf', () => {
  const https = ['https://127.0.0.1:2379'];

  it('none given: plaintext or etcd3\'s default for the scheme', () => {
    expect(etcdTlsPathsOf({}, ['http://127.0.0.1:2379'], {})).toBeUndefined();
    expect(etcdTlsPathsOf({}, https, { WAL_ETCD_CA: '' })).toBeUndefined();
  });

  it('a CA alone (server verified), or a CA with a client certificate and key', () => {
    expect(etcdTlsPathsOf({ etcdCa: 'e.pem' }, https, {})).toEqual({ ca: 'e.pem' });
    expect(etcdTlsPathsOf({}, https, { WAL_ETCD_CA: 'e.pem', WAL_ETCD_CERT: 'c.pem', WAL_ETCD_KEY: 'c.key' })).toEqual({ ca: 'e.pem', cert: 'c.pem', key: 'c.key' });
  });

  it('a certificate without its key, files without a CA, or an http:// endpoint: usage errors', () => {
    expect(() => etcdTlsPathsOf({ etcdCa: 'e.pem', etcdCert: 'c.pem' }, https, {})).toThrow(/--etcd-cert and --etcd-key go together/);
    expect(() => etcdTlsPathsOf({ etcdCert: 'c.pem', etcdKey: 'c.key' }, https, {})).toThrow(/go with --etcd-ca/);
    expect(() => etcdTlsPathsOf({ etcdCa: 'e.pem' }, ['https://a:1', 'http://b:2'], {})).toThrow(/needs https:\/\/ endpoints, got http:\/\/b:2/);
  });
});

describe('checkEtcdTransport', () => {
  it('a TLS node over plaintext etcd is a usage error unless --etcd-insecure (or WAL_ETCD_INSECURE=1) asks for it', () => {
    expect(() => checkEtcdTransport({}, true, false, {})).toThrow(InvalidArgumentError);
    expect(() => checkEtcdTransport({}, true, false, {})).toThrow(/etcd without TLS .* --etcd-insecure/);
    expect(() => checkEtcdTransport({}, true, false, { WAL_ETCD_INSECURE: '0' })).toThrow(/etcd without TLS/);
    expect(() => checkEtcdTransport({ etcdInsecure: true }, true, false, {})).not.toThrow();
    expect(() => checkEtcdTransport({}, true, false, { WAL_ETCD_INSECURE: 'true' })).not.toThrow();
  });

  it('TLS to etcd, or plaintext everywhere (--insecure), needs nothing more; --etcd-insecure with etcd TLS files is a usage error', () => {
    expect(() => checkEtcdTransport({}, true, true, {})).not.toThrow();
    expect(() => checkEtcdTransport({}, false, false, {})).not.toThrow();
    expect(() => checkEtcdTransport({ etcdInsecure: true }, true, true, {})).toThrow(/--etcd-insecure .* goes without --etcd-ca/);
  });
});
