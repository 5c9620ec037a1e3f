// An ATProto PDS for Atoll's tests (crates/testkit/src/pds.rs): @atproto/pds configured from
// PDS_* variables as the official distribution does, but listening on ATOLL_BIND (127.0.0.1)
// only, never on every interface.
import crypto from 'node:crypto'
import { PDS, envToCfg, envToSecrets, readEnv } from '@atproto/pds'

const host = process.env.ATOLL_BIND ?? '127.0.0.1'
process.env.PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX ??= crypto.randomBytes(32).toString('hex')
const env = readEnv()
const pds = await PDS.create(envToCfg(env), envToSecrets(env))
// express's app.listen(port) binds every interface; pin the address.
const listen = pds.app.listen.bind(pds.app)
pds.app.listen = (port, ...rest) => listen(port, host, ...rest)
await pds.start()
console.log(`pds listening on http://${host}:${env.port}`)
const stop = async () => {
  await pds.destroy()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
