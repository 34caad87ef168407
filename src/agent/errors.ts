/** An error whose message is meant for the operator as is: one sentence, naming what to fix. */
export class UserError extends Error {
  override name = 'UserError';
}
