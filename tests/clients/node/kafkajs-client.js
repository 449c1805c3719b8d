// kafkajs 2.2.4 against kafkaw, driven by tests/integration/test_client_matrix.py and test_groups.py.
//
//   node kafkajs-client.js produce BROKER TOPIC COUNT PARTITIONS [none|gzip]
//     Stock producer settings. Sends COUNT keyed messages (key-i / value-i + PADDING) to
//     partition i % PARTITIONS, compressed or not, and prints one JSON line:
//     {"ok": true, "sent": [{"partition", "key", "value", "offset"}]}.
//   node kafkajs-client.js consume BROKER TOPIC COUNT GROUP
//     Stock group consumer: subscribe (fromBeginning) + run with eachMessage, in consumer
//     group GROUP, until COUNT messages arrived; then disconnect (which commits what was
//     read and leaves the group). Prints {"ok": true, "ms", "joined": {"ms", "memberId",
//     "leader", "protocol", "assigned": {topic: [partition]}}, "messages": [{"partition", "offset", "key", "value"}]},
//     or {"ok": false, "name", "error", "ms", "messages"} on a crash or after 20 s.
//   node kafkajs-client.js admin BROKER TOPIC
//     Stock admin client: createTopics (3 partitions, retention.ms=60000),
//     createPartitions (to 5), describeConfigs of the topic, deleteTopics;
//     prints {"ok": true, "steps": {name: ms}, "partitions", "configs": {name: value}}.
//
// With KAFKAW_SASL set (JSON: {"mechanism": "scram-sha-256", "username", "password"}),
// every mode authenticates with it (kafkajs's `sasl` option).
//
// Exit code 0 when the line was printed; the test reads the JSON.
const { CompressionTypes, Kafka, logLevel, Partitioners } = require('kafkajs')

const [mode, broker, topic, countArg, partitionsArg, codec = 'none'] = process.argv.slice(2)
const kafka = new Kafka({
  clientId: 'kafkaw-matrix',
  brokers: [broker],
  logLevel: logLevel.ERROR,
  connectionTimeout: 3000,
  requestTimeout: 5000,
  retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 },
  sasl: process.env.KAFKAW_SASL ? JSON.parse(process.env.KAFKAW_SASL) : undefined,
})

const PADDING = '-kafkaw'.repeat(30) // as in test_client_matrix.py

function print (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

async function produce () {
  const count = parseInt(countArg, 10)
  const partitions = parseInt(partitionsArg, 10)
  const compression = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP }[codec]
  if (compression === undefined) throw new Error(`unknown codec ${codec}`)
  // The default partitioner is only named to silence kafkajs's warning about it.
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  const sent = []
  try {
    for (let i = 0; i < count; i++) {
      const message = { key: `key-${i}`, value: `value-${i}${PADDING}`, partition: i % partitions }
      const [meta] = await producer.send({ topic, acks: 1, compression, messages: [message] })
      if (meta.errorCode !== 0) throw new Error(`produce error ${meta.errorCode}`)
      sent.push({ partition: meta.partition, key: message.key, value: message.value, offset: Number(meta.baseOffset ?? meta.offset) }) // Produce v0 answers `offset`
    }
  } finally {
    await producer.disconnect()
  }
  print({ ok: true, sent })
}

async function consume () {
  const started = Date.now()
  const count = parseInt(countArg, 10)
  const groupId = partitionsArg
  if (!(count > 0) || !groupId) throw new Error('consume needs COUNT and GROUP')
  const consumer = kafka.consumer({ groupId })
  const messages = []
  let joined = null
  consumer.on(consumer.events.GROUP_JOIN, (event) => {
    const { memberId, leaderId, groupProtocol, memberAssignment } = event.payload
    joined = { ms: Date.now() - started, memberId, leader: memberId === leaderId, protocol: groupProtocol, assigned: memberAssignment }
  })
  let result
  try {
    result = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(Object.assign(new Error(`read ${messages.length} of ${count} messages in 20 s`), { name: 'Timeout' })), 20000)
      consumer.on(consumer.events.CRASH, (event) => { clearTimeout(timer); reject(event.payload.error) })
      consumer.connect()
        .then(() => consumer.subscribe({ topic, fromBeginning: true }))
        .then(() => consumer.run({
          eachMessage: async ({ partition, message }) => {
            messages.push({ partition, offset: Number(message.offset), key: message.key && message.key.toString(), value: message.value && message.value.toString() })
            if (messages.length >= count) { clearTimeout(timer); resolve({ ok: true, ms: Date.now() - started, joined, messages }) }
          },
        }))
        .catch((error) => { clearTimeout(timer); reject(error) })
    })
  } catch (error) {
    result = { ok: false, name: error.name, error: error.message, ms: Date.now() - started, joined, messages }
  }
  await consumer.disconnect().catch(() => {})
  print(result)
}

async function admin () {
  const client = kafka.admin()
  await client.connect()
  const steps = {}
  async function step (name, action) {
    const started = Date.now()
    const result = await action()
    steps[name] = Date.now() - started
    return result
  }
  try {
    const created = await step('createTopics', () => client.createTopics({
      topics: [{ topic, numPartitions: 3, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '60000' }] }],
    }))
    if (!created) throw new Error('createTopics answered false (topic exists?)')
    await step('createPartitions', () => client.createPartitions({ topicPartitions: [{ topic, count: 5 }] }))
    const metadata = await step('fetchTopicMetadata', () => client.fetchTopicMetadata({ topics: [topic] }))
    const described = await step('describeConfigs', () => client.describeConfigs({
      resources: [{ type: 2, name: topic }], includeSynonyms: false,
    }))
    const configs = {}
    for (const entry of described.resources[0].configEntries) configs[entry.configName] = entry.configValue
    await step('deleteTopics', () => client.deleteTopics({ topics: [topic] }))
    const left = await step('listTopics', () => client.listTopics())
    print({ ok: true, steps, partitions: metadata.topics[0].partitions.length, configs, listedAfterDelete: left.includes(topic) })
  } finally {
    await client.disconnect()
  }
}

const modes = { produce, consume, admin }
if (!modes[mode]) {
  console.error('usage: node kafkajs-client.js produce BROKER TOPIC COUNT PARTITIONS [CODEC] | consume BROKER TOPIC COUNT GROUP | admin BROKER TOPIC')
  process.exit(2)
}
modes[mode]().then(() => process.exit(0), (error) => {
  print({ ok: false, name: error.name, error: error.message })
  process.exit(1)
})
