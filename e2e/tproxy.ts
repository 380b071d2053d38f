// The minimal TPROXY plumbing of the sidecar's tests (sidecar/tproxy.testkit.ts), for test code of
// other folders: images/ may import only images/ and e2e/ (scripts/imports.test.ts).
export { installTproxy } from '../sidecar/tproxy.testkit.ts';
