// The Node.js side of the interop tests (nodeinterop_test.go). Each
// command writes one JSON object per line on stdout; the Go test reads
// them. Run with NODE_PATH pointing at examples/apphost/polyglot/node_modules
// (the repository's one npm lockfile).
//
//   AMQP_URL=... node interop.js amqp-consume QUEUE       consume until a message with body "END"
//   AMQP_URL=... node interop.js amqp-publish QUEUE JSON  publish [{id, body, traceparent?}, ...]
//   node interop.js http-echo                             express: GET /echo answers the trace headers
//   REDIS_URL=... node interop.js redis-sub CHANNEL       print each message until one is "END"
//   REDIS_URL=... node interop.js redis-pub CHANNEL B64...publish each base64-decoded payload
'use strict';

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

// Header values as JSON: AMQP long strings arrive as strings, byte arrays
// as Buffers.
function plainHeaders(headers) {
  const o = {};
  for (const [k, v] of Object.entries(headers || {})) {
    o[k] = Buffer.isBuffer(v) ? { base64: v.toString('base64') } : v;
  }
  return o;
}

async function amqpConsume(queue) {
  const amqp = require('amqplib');
  const conn = await amqp.connect(process.env.AMQP_URL);
  const ch = await conn.createChannel();
  await ch.assertQueue(queue); // durable: true is amqplib's default
  await ch.prefetch(10);
  await new Promise((resolve, reject) => {
    ch.consume(queue, (msg) => {
      const body = msg.content.toString('utf8');
      out({
        body,
        messageId: msg.properties.messageId || '',
        headers: plainHeaders(msg.properties.headers),
        redelivered: msg.fields.redelivered,
        persistent: msg.properties.deliveryMode === 2,
      });
      ch.ack(msg);
      if (body === 'END') resolve();
    }).then(() => out({ ready: true }), reject);
  });
  const q = await ch.checkQueue(queue);
  out({ done: true, left: q.messageCount });
  await ch.close();
  await conn.close();
}

async function amqpPublish(queue, json) {
  const amqp = require('amqplib');
  const conn = await amqp.connect(process.env.AMQP_URL);
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(queue);
  for (const m of JSON.parse(json)) {
    const headers = {};
    if (m.traceparent) headers.traceparent = m.traceparent; // by hand: amqplib carries no trace context itself
    ch.sendToQueue(queue, Buffer.from(m.body), { persistent: true, messageId: m.id, headers });
  }
  await ch.waitForConfirms();
  out({ published: true });
  await ch.close();
  await conn.close();
}

function httpEcho() {
  const express = require('express');
  const app = express();
  app.get('/echo', (req, res) => {
    res.json({
      path: req.originalUrl,
      host: req.get('host') || '',
      traceparent: req.get('traceparent') || '',
      tracestate: req.get('tracestate') || '',
      baggage: req.get('baggage') || '',
    });
  });
  const server = app.listen(0, '127.0.0.1', () => out({ port: server.address().port }));
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

async function redisSub(channel) {
  const { createClient } = require('redis');
  const client = createClient({ url: process.env.REDIS_URL });
  client.on('error', (err) => process.stderr.write(`redis: ${err}\n`));
  await client.connect();
  let end;
  const ended = new Promise((resolve) => { end = resolve; });
  // The third argument asks for Buffers: the bytes exactly as published.
  await client.subscribe(channel, (message) => {
    out({ base64: message.toString('base64') });
    if (message.toString('latin1') === 'END') end();
  }, true);
  out({ ready: true });
  await ended;
  await client.quit();
}

async function redisPub(channel, payloads) {
  const { createClient } = require('redis');
  const client = createClient({ url: process.env.REDIS_URL });
  await client.connect();
  const receivers = [];
  for (const p of payloads) {
    receivers.push(await client.publish(channel, Buffer.from(p, 'base64')));
  }
  out({ receivers });
  await client.quit();
}

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  switch (cmd) {
    case 'amqp-consume': return amqpConsume(args[0]);
    case 'amqp-publish': return amqpPublish(args[0], args[1]);
    case 'http-echo': return httpEcho();
    case 'redis-sub': return redisSub(args[0]);
    case 'redis-pub': return redisPub(args[0], args.slice(1));
    default: throw new Error(`unknown command ${cmd}`);
  }
}

main().catch((err) => {
  process.stderr.write(`interop.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
