import test from 'ava';
import { archAllowed, machineArch, normaliseArch, parseRuntimeYml } from '../src/runtime/runtime-yml.js';
import { PackageError } from '../src/runtime/types.js';

test('parses the fields the agent uses and normalises architectures', (t) => {
  const meta = parseRuntimeYml(`
name: python-3.11-ml
version: 3.11.4
language: python
description: Python with ML libraries
mounts:
  - source: isolated/usr
    target: /usr
requirements:
  architectures: [x86_64, ARM64, aarch64]
`);
  t.deepEqual(meta, {
    name: 'python-3.11-ml',
    version: '3.11.4',
    language: 'python',
    description: 'Python with ML libraries',
    architectures: ['amd64', 'arm64', 'arm64'],
  });
});

test('numeric versions are taken as written', (t) => {
  t.is(parseRuntimeYml('name: a\nversion: 1.10\n').version, '1.10');
  t.is(parseRuntimeYml('name: a\nversion: 2\n').version, '2');
  t.is(parseRuntimeYml('name: a\nversion: "1.0.0-rc.1+build.5"\n').version, '1.0.0-rc.1+build.5');
});

test('optional fields are dropped when not strings; requirements without architectures is fine', (t) => {
  t.deepEqual(parseRuntimeYml('name: a\nversion: "1"\nlanguage: 3\ndescription: [x]\nrequirements: {}\n'), { name: 'a', version: '1' });
  t.deepEqual(parseRuntimeYml('name: a\nversion: "1"\nrequirements:\n'), { name: 'a', version: '1' });
});

test('refusals name the field and the rule', (t) => {
  const cases: Array<[string, string]> = [
    ['version: 1\n', 'invalid runtime.yml: the required field "name" is missing'],
    ['name: a\n', 'invalid runtime.yml: the required field "version" is missing'],
    ['name: UPPER\nversion: 1\n', 'invalid runtime name "UPPER" in runtime.yml: must match ^[a-z0-9][a-z0-9.-]{0,63}$'],
    ['name: -lead\nversion: 1\n', 'invalid runtime name "-lead" in runtime.yml: must match ^[a-z0-9][a-z0-9.-]{0,63}$'],
    [`name: ${'a'.repeat(65)}\nversion: 1\n`, `invalid runtime name "${'a'.repeat(65)}" in runtime.yml: must match ^[a-z0-9][a-z0-9.-]{0,63}$`],
    ['name: 12\nversion: 1\n', 'invalid runtime name "12" in runtime.yml: must be a string'],
    ['name: a\nversion: a/b\n', `invalid version "a/b" in runtime.yml: must not contain '/' or '\\'`],
    ['name: a\nversion: "a\\\\b"\n', `invalid version "a\\\\b" in runtime.yml: must not contain '/' or '\\'`],
    ['name: a\nversion: "."\n', `invalid version "." in runtime.yml: must not be '.' or '..'`],
    ['name: a\nversion: ""\n', 'invalid version "" in runtime.yml: must not be empty'],
    ['name: a\nversion: "-1"\n', `invalid version "-1" in runtime.yml: must not start with '-'`],
    ['name: a\nversion: "1\\u0000"\n', 'invalid version "1\\u0000" in runtime.yml: must not contain a NUL character'],
    ['name: a\nversion: "1\\t2"\n', 'invalid version "1\\t2" in runtime.yml: must contain only printable characters'],
    [`name: a\nversion: "${'9'.repeat(129)}"\n`, `invalid version "${'9'.repeat(129)}" in runtime.yml: must be at most 128 characters`],
    ['name: a\nversion: [1]\n', 'invalid runtime.yml: the field "version" must be a string or a number'],
    ['- a\n- b\n', 'invalid runtime.yml: the top level must be a mapping of fields'],
    ['name: a\nversion: 1\nrequirements:\n  architectures: amd64\n', 'invalid runtime.yml: requirements.architectures must be a list of strings'],
    ['name: a\nversion: 1\nrequirements:\n  architectures: [1]\n', 'invalid runtime.yml: requirements.architectures must be a list of strings'],
  ];
  for (const [text, message] of cases) {
    t.throws(() => parseRuntimeYml(text), { instanceOf: PackageError, message }, text);
  }
});

test('invalid YAML gives the parser message on one line', (t) => {
  const err = t.throws(() => parseRuntimeYml('name: a\nversion: [1\n'), { instanceOf: PackageError });
  t.regex(err!.message, /^invalid runtime\.yml: \S/);
  t.false(err!.message.includes('\n'));
  t.throws(() => parseRuntimeYml('name: a\nname: b\nversion: 1\n'), { message: /^invalid runtime\.yml: .*[Uu]nique|duplicate/ });
});

test('architecture matching', (t) => {
  t.is(normaliseArch('x86_64'), 'amd64');
  t.is(normaliseArch('AArch64'), 'arm64');
  t.is(normaliseArch('riscv64'), 'riscv64');
  t.true(['amd64', 'arm64'].includes(machineArch()) || machineArch() === process.arch);
  const meta = parseRuntimeYml('name: a\nversion: 1\nrequirements:\n  architectures: [x86_64]\n');
  t.true(archAllowed(meta, 'amd64'));
  t.true(archAllowed(meta, 'x86_64'));
  t.false(archAllowed(meta, 'arm64'));
  t.true(archAllowed(parseRuntimeYml('name: a\nversion: 1\n'), 'arm64'), 'no list = any machine');
  t.is(archAllowed(meta), machineArch() === 'amd64');
});
