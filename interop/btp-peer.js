// An independent Interledger peer for the interop tests: the npm ilp-plugin-btp (with
// ilp-packet and ilp-protocol-ildcp), in shared-secret mode, on 127.0.0.1 only.
//
//   node btp-peer.js server <port> <secret>   listen; once our client is in, ask it ILDCP
//                                             and send it a BTP-NIPs PING
//   node btp-peer.js client <btp+ws://user:secret@127.0.0.1:port/>
//                                             connect; ask ILDCP, PING, an unroutable Prepare
//
// Every Prepare it receives is answered: `peer.config` with ILDCP (test.js-node.child,
// scale 6, JSC); a destination ending in `.reject` with F99; anything else is fulfilled
// when its data starts with the preimage of its condition. Each result is printed as one
// JSON line on stdout, which the Rust test reads.
'use strict'
const crypto = require('crypto')
const BtpPlugin = require('ilp-plugin-btp')
const IlpPacket = require('ilp-packet')
const ILDCP = require('ilp-protocol-ildcp')

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const sha256 = (b) => crypto.createHash('sha256').update(b).digest()
const PEER_CONDITION = sha256(Buffer.alloc(32))

async function handleData (buffer) {
  const prepare = IlpPacket.deserializeIlpPrepare(buffer)
  out({ event: 'prepare-received', destination: prepare.destination, amount: prepare.amount })
  if (prepare.destination === 'peer.config') {
    return ILDCP.serve({
      requestPacket: buffer,
      handler: async () => ({ clientAddress: 'test.js-node.child', assetScale: 6, assetCode: 'JSC' }),
      serverAddress: 'test.js-node'
    })
  }
  if (prepare.destination.endsWith('.reject')) {
    return IlpPacket.serializeIlpReject({
      code: 'F99', triggeredBy: 'test.js-node', message: 'rejected as asked', data: Buffer.from('reject-data')
    })
  }
  const preimage = prepare.data.slice(0, 32)
  if (preimage.length === 32 && sha256(preimage).equals(prepare.executionCondition)) {
    return IlpPacket.serializeIlpFulfill({ fulfillment: preimage, data: Buffer.from('fulfilled:' + prepare.amount) })
  }
  return IlpPacket.serializeIlpReject({
    code: 'F05', triggeredBy: 'test.js-node', message: 'wrong condition', data: Buffer.alloc(0)
  })
}

// A BTP-NIPs PING (header: version 1, type 8, payload length) as a zero-amount Prepare.
function pingPrepare (nonce) {
  const json = Buffer.from(JSON.stringify({
    payment: { amount: '0', currency: '', purpose: 'ping' },
    nostr: null,
    metadata: { timestamp: Math.floor(Date.now() / 1000), sender: 'test.js-node', nonce }
  }))
  const header = Buffer.from([1, 8, json.length >> 8, json.length & 0xff])
  return IlpPacket.serializeIlpPrepare({
    amount: '0',
    executionCondition: PEER_CONDITION,
    expiresAt: new Date(Date.now() + 30000),
    destination: 'peer.btp-nips',
    data: Buffer.concat([header, json])
  })
}

async function exercise (plugin) {
  const ildcp = await ILDCP.fetch(plugin.sendData.bind(plugin))
  out({ event: 'ildcp', clientAddress: ildcp.clientAddress, assetScale: ildcp.assetScale, assetCode: ildcp.assetCode })
  const reply = IlpPacket.deserializeIlpPacket(await plugin.sendData(pingPrepare('00000000cafebabe')))
  if (reply.typeString === 'ilp_fulfill') {
    const data = reply.data.data
    const pong = JSON.parse(data.slice(4).toString('utf8'))
    out({
      event: 'pong',
      type: data[1],
      nonce: pong.metadata.nonce,
      sender: pong.metadata.sender,
      fulfillment: reply.data.fulfillment.toString('hex')
    })
  } else {
    out({ event: 'ping-failed', reply: reply.typeString, code: reply.data.code })
  }
  const unroutable = IlpPacket.deserializeIlpPacket(await plugin.sendData(IlpPacket.serializeIlpPrepare({
    amount: '10',
    executionCondition: crypto.randomBytes(32),
    expiresAt: new Date(Date.now() + 30000),
    destination: 'test.nowhere',
    data: Buffer.alloc(0)
  })))
  out({ event: 'unroutable', type: unroutable.typeString, code: unroutable.data.code })
}

async function main () {
  const [mode, a, b] = process.argv.slice(2)
  if (mode === 'server') {
    const plugin = new BtpPlugin({ listener: { port: Number(a), secret: b } })
    plugin.registerDataHandler(handleData)
    const connected = plugin.connect()
    // The listener is up once connect() has run synchronously to its first await.
    setImmediate(() => out({ event: 'ready' }))
    await connected
    out({ event: 'connected' })
    await exercise(plugin)
    out({ event: 'done' })
    // Stay up until the test ends us; answer whatever else comes.
  } else if (mode === 'client') {
    const plugin = new BtpPlugin({ server: a })
    plugin.registerDataHandler(handleData)
    await plugin.connect()
    out({ event: 'connected' })
    await exercise(plugin)
    out({ event: 'done' })
    await plugin.disconnect()
    process.exit(0)
  } else {
    console.error('usage: btp-peer.js server <port> <secret> | client <btp+ws://user:secret@127.0.0.1:port/>')
    process.exit(2)
  }
}

main().catch((err) => {
  out({ event: 'error', message: err.message })
  process.exit(1)
})
