// Evaluates a batch of IAM requests with @cloud-copilot/iam-simulate, for tests/stacks.
//
// stdin: {"simulations": [Simulation, ...]} (the package's Simulation objects)
// stdout: one JSON line per simulation, in order: {"result": "Allowed" | "ExplicitlyDenied" |
// "ImplicitlyDenied"} or {"error": "..."} when the package refuses the input (an unknown
// action, a malformed policy, a context key of the wrong type).
//
// One extension: the package files every `kms:EncryptionContext:<name>` context key under its
// specification's placeholder `kms:EncryptionContext:${EncryptionContextKey}`, forgetting
// <name>, so a condition on `kms:EncryptionContext:aws:s3:arn` would never see the request's
// value. A request that carries exactly one encryption-context key (S3 sends one: aws:s3:arn)
// is evaluated with that key renamed to the placeholder in its context and its policies alike,
// which keeps the comparison exact.
import { runSimulation } from '@cloud-copilot/iam-simulate'

const PLACEHOLDER = 'kms:EncryptionContext:${EncryptionContextKey}'

function withEncryptionContextRenamed(simulation) {
  const keys = Object.keys(simulation.request.contextVariables).filter((key) =>
    key.toLowerCase().startsWith('kms:encryptioncontext:')
  )
  if (keys.length !== 1) return simulation
  const text = JSON.stringify(simulation)
  return JSON.parse(text.split(JSON.stringify(keys[0])).join(JSON.stringify(PLACEHOLDER)))
}

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const { simulations } = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const lines = []
for (const simulation of simulations) {
  const response = await runSimulation(withEncryptionContextRenamed(simulation), {})
  if (response.resultType === 'error') {
    lines.push(JSON.stringify({ error: JSON.stringify(response.errors) }))
  } else {
    lines.push(JSON.stringify({ result: response.overallResult }))
  }
}
process.stdout.write(lines.join('\n') + '\n')
