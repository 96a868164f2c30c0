// A js-libp2p peer in a private network (@libp2p/pnet), for tests/interop/test_js_pnet.py.
//
//   node pnet_peer.mjs dial SWARM_KEY_FILE /ip4/127.0.0.1/tcp/PORT/p2p/PEER_ID
//     dials the opentela node; prints one JSON line {"ok": true, "peer": ..., "stream": ...}
//     once pnet + Noise + Yamux are up and a stream negotiation went through the muxer (our
//     node answers "na" for the probe protocol), or {"ok": false, "error": ...}; exit 0 / 1.
//   node pnet_peer.mjs listen SWARM_KEY_FILE
//     listens on 127.0.0.1, prints {"listening": MULTIADDR}, then one JSON line per inbound
//     connection {"inbound": PEER_ID}; runs until killed.
import { readFileSync } from 'node:fs'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const [mode, keyFile, target] = process.argv.slice(2)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const node = await createLibp2p({
  addresses: { listen: mode === 'listen' ? ['/ip4/127.0.0.1/tcp/0'] : [] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionProtector: preSharedKey({ psk: readFileSync(keyFile) })
})

if (mode === 'listen') {
  node.addEventListener('peer:connect', (evt) => say({ inbound: evt.detail.toString() }))
  say({ listening: node.getMultiaddrs()[0].toString() })
} else {
  let code = 1
  try {
    const conn = await node.dial(multiaddr(target), { signal: AbortSignal.timeout(5000) })
    let stream = 'opened'
    try {
      const s = await conn.newStream('/opentela/interop-probe/1', {
        signal: AbortSignal.timeout(5000)
      })
      await s.close()
    } catch (err) {
      // The node does not speak the probe protocol: its "na" came back through Yamux.
      stream = err.name === 'UnsupportedProtocolError' ? 'unsupported' : `error: ${err.message}`
    }
    say({ ok: true, peer: conn.remotePeer.toString(), stream })
    code = stream === 'unsupported' || stream === 'opened' ? 0 : 1
  } catch (err) {
    say({ ok: false, error: `${err.name}: ${err.message}` })
  }
  await node.stop()
  process.exit(code)
}
