// A PLC directory for Atoll's tests (crates/testkit/src/pds.rs): @did-plc/server with its
// in-memory database, listening on ATOLL_BIND:ATOLL_PORT (127.0.0.1 and a free port).
import http from 'node:http'
import plc from '@did-plc/server'

const { PlcServer, Database } = plc
const host = process.env.ATOLL_BIND ?? '127.0.0.1'
const port = Number(process.env.ATOLL_PORT)
if (!port) throw new Error('plc.mjs: set ATOLL_PORT')

const server = PlcServer.create({ db: Database.mock(), port })
const listener = http.createServer(server.app)
listener.listen(port, host, () => console.log(`plc listening on http://${host}:${port}`))
const stop = () => listener.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
