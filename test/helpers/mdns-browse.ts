// Browses _hearth._tcp and prints one JSON line per event (up, down, txt-update) until killed. Tests
// run it inside a network namespace.
import { Bonjour, type Service } from 'bonjour-service';

import { MDNS_SERVICE_TYPE } from '../../link/worker-wire.js';

const bonjour = new Bonjour();
const browser = bonjour.find({ type: MDNS_SERVICE_TYPE });
const print = (event: string, s: Service) =>
  process.stdout.write(JSON.stringify({ event, name: s.name, port: s.port, addresses: s.addresses ?? [], txt: s.txt ?? {} }) + '\n');
browser.on('up', (s: Service) => print('up', s));
browser.on('down', (s: Service) => print('down', s));
browser.on('txt-update', (s: Service) => print('txt-update', s));
process.stdout.write(JSON.stringify({ event: 'browsing' }) + '\n');
const stop = () => bonjour.destroy(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// Asks again every second: a browser started after the worker announced still finds it quickly.
setInterval(() => browser.update(), 1000);
