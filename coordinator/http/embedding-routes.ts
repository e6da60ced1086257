// The HTTP routes of embeddings and rerank: OpenAI's POST /v1/embeddings, and llama-server's POST
// /v1/rerank with the aliases llama-server answers (/rerank, /reranking, /v1/reranking).
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';

import type { Coordinator } from '../coordinator.js';
import { checkDimensions, embeddingsCall, embeddingsResponse, rerankCall, rerankResponse } from './embeddings.js';
import { invalid } from './errors.js';

export const RERANK_ROUTES = ['/v1/rerank', '/v1/reranking', '/rerank', '/reranking'] as const;

function jsonBody(req: FastifyRequest): unknown {
  if (typeof req.body !== 'string' || req.body.length === 0) return undefined;
  try {
    return JSON.parse(req.body);
  } catch (e) {
    throw invalid(`the request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** Aborted when the client disconnects before its answer is written. */
function disconnectSignal(reply: FastifyReply): AbortSignal {
  const abort = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) abort.abort();
  });
  return abort.signal;
}

/** `auth`: the API-key check every other route has. */
export function registerEmbeddingRoutes(app: FastifyInstance, coordinator: Coordinator, auth: preHandlerAsyncHookHandler): void {
  app.post('/v1/embeddings', { preHandler: auth }, async (req, reply) => {
    const call = embeddingsCall(jsonBody(req));
    const result = await coordinator.embed(call.request, { signal: disconnectSignal(reply) });
    checkDimensions(call.dimensions, result);
    return embeddingsResponse(result, call.encoding);
  });
  for (const route of RERANK_ROUTES) {
    app.post(route, { preHandler: auth }, async (req, reply) => {
      const call = rerankCall(jsonBody(req));
      const result = await coordinator.rerank(call.request, { signal: disconnectSignal(reply) });
      return rerankResponse(result, call);
    });
  }
}
